// The generator's own pseudo-random numbers: mulberry32, so a seed gives the same queries on
// every machine and Node version (Math.random is never used).

/** A mulberry32 generator with the helpers the grammar uses. */
export class Rng {
  constructor(seed) {
    this.state = (seed >>> 0) ^ 0x9e3779b9;
  }

  /** A float in [0, 1). */
  next() {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** An integer in [lo, hi], both included. */
  int(lo, hi) {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }

  /** True with probability p. */
  chance(p) {
    return this.next() < p;
  }

  /** One element of a non-empty array. */
  pick(list) {
    return list[Math.floor(this.next() * list.length)];
  }

  /**
   * One of weighted choices: [[weight, value], …]; a function value is called (with no
   * arguments) and its result returned, so choices can be written lazily.
   */
  weighted(choices) {
    let total = 0;
    for (const [w] of choices) total += w;
    let r = this.next() * total;
    for (const [w, v] of choices) {
      r -= w;
      if (r < 0) return typeof v === 'function' ? v() : v;
    }
    const last = choices[choices.length - 1][1];
    return typeof last === 'function' ? last() : last;
  }

  /** n distinct elements of list (all of them if n is larger), in random order. */
  sample(list, n) {
    const copy = list.slice();
    for (let i = copy.length - 1; i > 0; i--) {
      const j = Math.floor(this.next() * (i + 1));
      [copy[i], copy[j]] = [copy[j], copy[i]];
    }
    return copy.slice(0, Math.min(n, copy.length));
  }
}
