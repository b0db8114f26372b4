// Finds stop strings in streamed text. Text that might be the start of a stop string is
// held back until the next piece decides it, so a client never sees part of a stop string.

export class StopMatcher {
  private held = "";
  private readonly maxStop: number;

  constructor(private readonly stops: readonly string[]) {
    this.maxStop = stops.reduce((m, s) => Math.max(m, s.length), 0);
  }

  /** Feed a piece; returns the text safe to emit now and whether a stop string was hit. */
  push(piece: string): { emit: string; stopped: boolean } {
    if (this.maxStop === 0) return { emit: piece, stopped: false };
    const buf = this.held + piece;
    let cut = -1;
    for (const s of this.stops) {
      const i = buf.indexOf(s);
      if (i !== -1 && (cut === -1 || i < cut)) cut = i;
    }
    if (cut !== -1) {
      this.held = "";
      return { emit: buf.slice(0, cut), stopped: true };
    }
    const keep = this.partialSuffix(buf);
    this.held = buf.slice(buf.length - keep);
    return { emit: buf.slice(0, buf.length - keep), stopped: false };
  }

  /** Text still held back when generation ends without a stop string. */
  flush(): string {
    const out = this.held;
    this.held = "";
    return out;
  }

  // Longest suffix of buf that is a proper prefix of some stop string.
  private partialSuffix(buf: string): number {
    for (let len = Math.min(this.maxStop - 1, buf.length); len > 0; len--) {
      const tail = buf.slice(buf.length - len);
      if (this.stops.some((s) => s.startsWith(tail))) return len;
    }
    return 0;
  }
}
