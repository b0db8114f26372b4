// HTTPS settings from security.tls: the files read and checked at start (and again at a
// certificate reload), so that a missing or unreadable file, a key that does not belong to the
// certificate or an expired certificate stop the start with one line instead of failing each
// handshake later. Node's own TLS (OpenSSL) does the handshakes.
import { X509Certificate, createPrivateKey } from "node:crypto";
import { readFileSync } from "node:fs";
import { createSecureContext, type SecureContextOptions, type TlsOptions } from "node:tls";
import { MoltbotError } from "../errors.js";
import type { MoltbotConfig } from "../config/schema.js";

export type TlsSettings = NonNullable<MoltbotConfig["security"]["tls"]>;

// TLS 1.2: forward secrecy (ECDHE) and AEAD ciphers only, as Mozilla's "intermediate"
// profile; no CBC, RSA key exchange, 3DES or RC4. TLS 1.3's suites are all AEAD; they are
// listed because Node sets both lists from this one string.
export const CIPHERS = [
  "TLS_AES_128_GCM_SHA256",
  "TLS_AES_256_GCM_SHA384",
  "TLS_CHACHA20_POLY1305_SHA256",
  "ECDHE-ECDSA-AES128-GCM-SHA256",
  "ECDHE-RSA-AES128-GCM-SHA256",
  "ECDHE-ECDSA-AES256-GCM-SHA384",
  "ECDHE-RSA-AES256-GCM-SHA384",
  "ECDHE-ECDSA-CHACHA20-POLY1305",
  "ECDHE-RSA-CHACHA20-POLY1305",
].join(":");

/** The checked files of security.tls, ready for the listener. */
export interface TlsMaterial {
  /** For https.createServer and server.setSecureContext. */
  context: SecureContextOptions;
  /** Client certificates: asked for and required with client_auth: require. */
  clientAuth: Pick<TlsOptions, "requestCert" | "rejectUnauthorized">;
  /** The serving (first) certificate of cert_file. */
  certificate: { subject: string; fingerprint256: string; validTo: Date };
}

function readPem(settings: TlsSettings, key: "cert_file" | "key_file" | "ca_file"): Buffer {
  const file = settings[key]!;
  try {
    return readFileSync(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? String(err);
    throw new MoltbotError("tls_invalid", `security.tls.${key}: cannot read ${file} (${code})`, { cause: err });
  }
}

/** Read and check the files; throws tls_invalid with one line naming the key and the reason. */
export function loadTls(settings: TlsSettings, now: Date = new Date()): TlsMaterial {
  const cert = readPem(settings, "cert_file");
  const key = readPem(settings, "key_file");
  const ca = settings.ca_file === undefined ? undefined : readPem(settings, "ca_file");

  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(cert);
  } catch (err) {
    throw new MoltbotError("tls_invalid", `security.tls.cert_file: ${settings.cert_file} holds no PEM certificate (${(err as Error).message})`, { cause: err });
  }
  let privateKey;
  try {
    privateKey = createPrivateKey(key);
  } catch (err) {
    throw new MoltbotError("tls_invalid", `security.tls.key_file: ${settings.key_file} holds no usable unencrypted PEM private key (${(err as Error).message})`, { cause: err });
  }
  if (!leaf.checkPrivateKey(privateKey)) {
    throw new MoltbotError("tls_invalid", `security.tls.key_file: the key in ${settings.key_file} does not match the certificate in ${settings.cert_file} (${leaf.subject.replace(/\n/g, ", ")})`);
  }
  const validFrom = new Date(leaf.validFrom);
  const validTo = new Date(leaf.validTo);
  if (validTo.getTime() <= now.getTime()) {
    throw new MoltbotError("tls_invalid", `security.tls.cert_file: the certificate in ${settings.cert_file} expired on ${validTo.toISOString()}; renew it`);
  }
  if (validFrom.getTime() > now.getTime()) {
    throw new MoltbotError("tls_invalid", `security.tls.cert_file: the certificate in ${settings.cert_file} is not valid before ${validFrom.toISOString()}`);
  }
  if (ca !== undefined) {
    try {
      new X509Certificate(ca);
    } catch (err) {
      throw new MoltbotError("tls_invalid", `security.tls.ca_file: ${settings.ca_file} holds no PEM certificate (${(err as Error).message})`, { cause: err });
    }
  }

  const context: SecureContextOptions = {
    cert,
    key,
    ...(ca === undefined ? {} : { ca }),
    minVersion: settings.min_version === "TLS1_3" ? "TLSv1.3" : "TLSv1.2",
    maxVersion: "TLSv1.3",
    ciphers: CIPHERS,
    honorCipherOrder: true,
  };
  try {
    // What OpenSSL itself refuses (a chain it cannot use, a key type it does not support).
    createSecureContext(context);
  } catch (err) {
    throw new MoltbotError("tls_invalid", `security.tls: OpenSSL refuses ${settings.cert_file} with ${settings.key_file} (${(err as Error).message})`, { cause: err });
  }
  const require = (settings.client_auth ?? (ca === undefined ? "none" : "require")) === "require";
  return {
    context,
    clientAuth: { requestCert: require, rejectUnauthorized: require },
    certificate: { subject: leaf.subject.replace(/\n/g, ", "), fingerprint256: leaf.fingerprint256, validTo },
  };
}

/** "CN=example, valid until 2027-01-01T00:00:00.000Z, SHA-256 AB:CD:..." for the log. */
export function describeCertificate(m: TlsMaterial): string {
  return `${m.certificate.subject}, valid until ${m.certificate.validTo.toISOString()}, SHA-256 ${m.certificate.fingerprint256.slice(0, 23)}...`;
}
