// Certificates for the TLS tests, made by the openssl CLI in a temp dir at test time (no
// committed keys): a CA, server certificates it signs for 127.0.0.1/localhost, a client
// certificate, and an expired one. EC P-256 keys: generated in milliseconds.
import { execFileSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";

export interface CertSet {
  dir: string;
  caCert: string;
  caKey: string;
  /** Signed by the CA, for 127.0.0.1 and localhost. */
  server: { cert: string; key: string };
  /** Another one, for a reload. */
  server2: { cert: string; key: string };
  /** A client certificate signed by the CA. */
  client: { cert: string; key: string };
  /** A client certificate signed by another CA. */
  stranger: { cert: string; key: string };
  /** Self-signed, valid only in January 2020. */
  expired: { cert: string; key: string };
}

const openssl = (cwd: string, ...args: string[]) => execFileSync("openssl", args, { cwd, stdio: ["ignore", "pipe", "pipe"] });
const EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];

export function makeCerts(dir: string): CertSet {
  mkdirSync(dir, { recursive: true });
  const p = (name: string) => path.join(dir, name);
  openssl(dir, "req", "-x509", ...EC, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=moltbot test CA");
  openssl(dir, "req", "-x509", ...EC, "-keyout", "other-ca.key", "-out", "other-ca.pem", "-days", "2", "-subj", "/CN=another CA");
  writeFileSync(p("san.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n");
  const signed = (name: string, cn: string, ca = "ca", ext = true) => {
    openssl(dir, "req", ...EC, "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", `/CN=${cn}`);
    openssl(dir, "x509", "-req", "-in", `${name}.csr`, "-CA", `${ca}.pem`, "-CAkey", `${ca}.key`, "-set_serial", String(Date.now() % 1e9), "-days", "1", "-out", `${name}.pem`, ...(ext ? ["-extfile", "san.ext"] : []));
    return { cert: p(`${name}.pem`), key: p(`${name}.key`) };
  };
  const server = signed("server", "localhost");
  const server2 = signed("server2", "localhost-renewed");
  const client = signed("client", "client-1", "ca", false);
  const stranger = signed("stranger", "stranger", "other-ca", false);

  // `openssl req -x509` will not write a certificate already expired; `openssl ca` takes dates.
  mkdirSync(p("db"), { recursive: true });
  writeFileSync(p("db/index.txt"), "");
  writeFileSync(p("db/serial"), "01\n");
  writeFileSync(
    p("ca.cnf"),
    ["[ca]", "default_ca = d", "[d]", "database = db/index.txt", "new_certs_dir = db", "serial = db/serial", "default_md = sha256", "policy = p", "unique_subject = no", "[p]", "commonName = supplied", ""].join("\n"),
  );
  openssl(dir, "req", ...EC, "-keyout", "expired.key", "-out", "expired.csr", "-subj", "/CN=expired");
  openssl(dir, "ca", "-batch", "-notext", "-config", "ca.cnf", "-selfsign", "-keyfile", "expired.key", "-in", "expired.csr", "-startdate", "20200101000000Z", "-enddate", "20200102000000Z", "-out", "expired.pem");
  return { dir, caCert: p("ca.pem"), caKey: p("ca.key"), server, server2, client, stranger, expired: { cert: p("expired.pem"), key: p("expired.key") } };
}
