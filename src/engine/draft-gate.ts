// Whether speculative drafting pays, from what it costs here. A draft token is verified as one
// more row of the decode batch. Where a step's cost is mostly fixed (a tiny model: graph
// set-up, synchronisation, sampling) the extra rows are nearly free and every accepted draft
// saves a step; where the kernels are compute-bound (a 100M model on 1-2 CPU threads) a row
// costs almost as much as a step, and drafting loses unless nearly every draft is accepted.
// Measured (in-process, 64-token greedy, random m100 at 1 thread): 177 tok/s without drafts,
// 137 with them at 63% acceptance; the demo model: 689 -> 1167 tok/s.
//
// So the engine times single-sequence steps with and without drafts, keeps the marginal cost
// of a draft row as a fraction of a one-row step (`rowCost`), and lets a sequence draft only
// while its acceptance rate beats that cost: a step with d drafts costs (1 + rowCost*d) steps
// and yields 1 + accepted tokens, so drafting pays when accepted/d > rowCost. One draft in
// EXPLORE_EVERY is let through regardless, so the cost estimate follows the machine's load.

const EMA = 0.1;
const EXPLORE_EVERY = 32;

export class DraftGate {
  private oneRowMs = 0;
  private rowCost = Number.NaN;
  private decisions = 0;

  /** A decode step of one generating sequence: `drafts` draft rows beside its token, no prompt. */
  record(drafts: number, ms: number): void {
    if (drafts === 0) {
      this.oneRowMs = this.oneRowMs === 0 ? ms : this.oneRowMs + EMA * (ms - this.oneRowMs);
      return;
    }
    if (this.oneRowMs === 0) return;
    const cost = Math.max(0, (ms - this.oneRowMs) / (drafts * this.oneRowMs));
    this.rowCost = Number.isNaN(this.rowCost) ? cost : this.rowCost + EMA * (cost - this.rowCost);
  }

  /** Whether a sequence with this draft record should draft now. */
  pays(accepted: number, proposed: number): boolean {
    if (Number.isNaN(this.rowCost)) return true;
    if (++this.decisions % EXPLORE_EVERY === 0) return true;
    return (accepted + 1) / (proposed + 2) > this.rowCost;
  }

  /** The measured marginal cost of a draft row, as a fraction of a one-row step (NaN until measured). */
  get draftRowCost(): number {
    return this.rowCost;
  }
}
