"""The scorer over a *block*: T consecutive waves of the same K keys, with the recursions run per key in time.

With few keys a poll is thousands of waves of a handful of keys, and the wave-at-a-time scorer
(:meth:`ResidualScorer.score`) pays about a hundred numpy calls of fixed cost per wave, whatever its width.
Most of that work does not depend on the previous step: residuals, z-scores, chi-square and Gaussian tails,
the Pareto tails, the [0, 1] scores. Here it runs once per block over all T x K points. What does depend on it
(an EWMA variance, a tail quantile, a repeat rate: each a few scalar operations) runs as plain Python floats per
key over the block's T steps, which costs per *point* (about a microsecond), not per wave.

The numbers are the wave-at-a-time scorer's, bit for bit: every operation is the same IEEE double operation on
the same operands in the same order (Python floats and numpy's elementwise float64 ufuncs round alike; the
transcendental functions stay numpy's, called on the block instead of the wave), and a state column stored at
half width (``consumer.state``) is rounded to float32 after every step here as the table rounds it between
waves (``tests/unit/test_blockscore.py`` steps random blocks both ways, states and results). Detectors without
a kernel here, seasons, and blocks with a non-finite input or residual go wave by wave
(:meth:`ResidualScorer.score_block` decides).
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass
from typing import Any

import numpy as np

from rnnwatch.consumer.state import StateTable
from rnnwatch.consumer.stuck import NORM_RATE, rate_before_run
from rnnwatch.consumer.tailcal import MAX_EXCESS, TailCalibrator
from rnnwatch.consumer.tails import chi2_surprise, upper_surprise
from rnnwatch.consumer.waveops import every, row_all, row_sum

__all__ = ["Block", "calibrate_block", "kernel_of"]


@dataclass(frozen=True)
class Block:
    """A block as the detectors see it: T steps of K keys (rows aligned), every value and residual finite."""

    x: np.ndarray  # float64 [T, K, F], message units
    z: np.ndarray  # float64 [T, K, F], residual / the model's scale
    n_features: int

    def z2(self) -> np.ndarray:
        """[T, K] squared residual norm of each step (summed over features as a wave sums them)."""
        T, K = self.z.shape[:2]
        return np.asarray(row_sum((self.z * self.z).reshape(T * K, -1)).reshape(T, K))


def _rounder() -> Any:
    """A one-slot float32 buffer: ``buf[0] = v; v = buf[0]`` rounds a float to float32 to nearest, as numpy's cast
    (and the state table's store of a half-width column) does."""
    return array("f", [0.0])


def _f32(buf: Any, v: float) -> float:
    """v rounded to float32 as the table stores a half-width column (the tail moments between steps)."""
    buf[0] = v
    r: float = buf[0]
    return r


def _stored(table: StateTable, name: str, x: np.ndarray) -> np.ndarray:
    """x as column ``name`` stores it between waves (float32 when narrowed) and hands it back (float64)."""
    return x.astype(table.stored[name].dtype).astype(np.float64)


def _wide(table: StateTable, name: str, rows: np.ndarray) -> np.ndarray:
    return np.asarray(table.arrays[name].take(rows, axis=0))


class _Kernel:
    """A detector's block form: ``prepare`` says whether the block can take it (and hands ``run`` what it
    computed to decide), ``run`` steps the block and writes the detector's state back."""

    def __init__(self, d: Any) -> None:
        self.d = d

    def prepare(self, table: StateTable, rows: np.ndarray, b: Block) -> Any:
        return True


class _Gaussian(_Kernel):
    def run(self, table: StateTable, rows: np.ndarray, b: Block) -> np.ndarray:
        d = self.d
        T, K = b.z.shape[:2]
        z2 = b.z2()
        z2k = z2 / d.k
        var0, n0 = _wide(table, "s.var", rows).tolist(), table.arrays["s.n"][rows].tolist()
        q: list[list[float]] = []
        new_var, buf, alpha0, clip = [], _rounder(), d.alpha, d.clip
        for j in range(K):
            var, n = var0[j], n0[j]
            qj: list[float] = []
            put = qj.append
            z2j, z2kj = z2[:, j].tolist(), z2k[:, j].tolist()
            if 1.0 / (n + 1 if n + 1 > 1 else 1) <= alpha0:  # warm: the EWMA weight is alpha0 all block long
                for z2t, z2kt in zip(z2j, z2kj, strict=True):
                    put(z2t / var)
                    cv = clip * var
                    v = var + alpha0 * ((cv if cv < z2kt else z2kt) - var)
                    buf[0] = v if v > 1e-6 else 1e-6
                    var = buf[0]
            else:
                for t in range(T):
                    n += 1
                    put(z2j[t] / var)
                    inv = 1.0 / (n if n > 1 else 1)
                    alpha = inv if inv > alpha0 else alpha0
                    cv = clip * var
                    step = (cv if cv < z2kj[t] else z2kj[t]) - var
                    v = var + alpha * step
                    buf[0] = v if v > 1e-6 else 1e-6
                    var = buf[0]
            q.append(qj)
            new_var.append(var)
        table.arrays["s.var"][rows] = np.array(new_var)
        table.arrays["s.n"][rows] = np.array(n0, dtype=np.int64) + T
        return chi2_surprise(np.array(q).T, d.k)


class _Volatility(_Kernel):
    def prepare(self, table: StateTable, rows: np.ndarray, b: Block) -> Any:
        prev = np.concatenate([_wide(table, "s.volatility.prev", rows)[None],
                               _stored(table, "s.volatility.prev", b.x[:-1])])
        with np.errstate(invalid="ignore", divide="ignore"):
            r = np.log(b.x / prev) if self.d.log_returns else b.x - prev
        return r if every(np.isfinite(r)) else None

    def run(self, table: StateTable, rows: np.ndarray, b: Block, r: np.ndarray) -> np.ndarray:
        d = self.d
        T, K, F = r.shape
        r2 = r * r
        var0 = _wide(table, "s.volatility.var", rows).reshape(K * F).tolist()
        long0 = _wide(table, "s.volatility.long", rows).reshape(K * F).tolist()
        n0 = table.arrays["s.volatility.n"][rows]
        ratios: list[list[float]] = []
        r2c = r2.reshape(T, K * F)
        new_var, new_long, buf = [], [], _rounder()
        a_short, a_long = d.alpha, d.long_alpha
        n0l = n0.tolist()
        for c in range(K * F):
            var, long, n, r2j = var0[c], long0[c], n0l[c // F], r2c[:, c].tolist()
            rc: list[float] = []
            put = rc.append
            inv0 = 1.0 / (n + 1 if n + 1 > 1 else 1)
            if inv0 <= a_long and inv0 <= a_short:  # warm: both EWMA weights constant all block long
                for r2t in r2j:
                    fl = long * 1e-4
                    fl = fl if fl > 1e-18 else 1e-18
                    put(r2t / (fl if fl > var else var))
                    buf[0] = long + a_long * (r2t - long)
                    long = buf[0]
                    buf[0] = var + a_short * (r2t - var)
                    var = buf[0]
            else:
                for t in range(T):
                    n += 1
                    fl = long * 1e-4
                    fl = fl if fl > 1e-18 else 1e-18
                    put(r2j[t] / (fl if fl > var else var))
                    inv = 1.0 / (n if n > 1 else 1)
                    first = inv if inv > a_long else a_long
                    alpha = inv if inv > a_short else a_short
                    buf[0] = long + first * (r2j[t] - long)
                    long = buf[0]
                    buf[0] = var + alpha * (r2j[t] - var)
                    var = buf[0]
            ratios.append(rc)
            new_var.append(var)
            new_long.append(long)
        ratio = np.array(ratios)
        d2 = row_sum(ratio.reshape(K, F, T).transpose(2, 0, 1).reshape(T * K, F)).reshape(T, K)
        steps_seen = n0[None, :] + np.arange(T)[:, None]
        ready = steps_seen >= d.min_steps
        surprise = chi2_surprise(d2, d.f)
        out = surprise if every(ready) else np.where(ready, surprise, 0.0)
        a = table.arrays
        a["s.volatility.var"][rows] = np.array(new_var).reshape(K, F)
        a["s.volatility.long"][rows] = np.array(new_long).reshape(K, F)
        a["s.volatility.prev"][rows] = b.x[-1]
        a["s.volatility.n"][rows] = n0 + T
        return np.asarray(out)


class _Stuck(_Kernel):
    def run(self, table: StateTable, rows: np.ndarray, b: Block) -> np.ndarray:
        d = self.d
        T, K, F = b.x.shape
        a = table.arrays
        prev = np.concatenate([_wide(table, "s.stuck.prev", rows)[None], _stored(table, "s.stuck.prev", b.x[:-1])])
        repeat = row_all((b.x == prev).reshape(T * K, F)).reshape(T, K)
        stats = _wide(table, "s.stuck.stats", rows)
        rate0, repeats0, run0, n0 = (stats[:, i].tolist() for i in range(4))
        # at each repeat, the stats before it (rate, repeats, run, n), as the wave path reads them from the table
        at: list[tuple[int, int]] = []
        before: list[tuple[float, float, float, float]] = []
        final = np.empty((K, 4))
        buf, alpha0 = _rounder(), d.alpha
        for j in range(K):
            rate, repeats, run, n = rate0[j], repeats0[j], run0[j], n0[j]
            reps = repeat[:, j].tolist()
            if n >= 1 and 1.0 / (n if n > 1.0 else 1.0) <= alpha0 and n + T < 2**24:
                # warm: the rate's weight is alpha0 all block long, and the count n + t is exact in float32
                for t, rep in enumerate(reps):
                    if rep:
                        at.append((t, j))
                        before.append((rate, repeats, run, n + t))
                        buf[0] = run + 1.0
                        run = buf[0]
                        buf[0] = repeats + 1.0
                        repeats = buf[0]
                        buf[0] = rate + alpha0 * (1.0 - rate)
                    else:
                        run = 0.0
                        buf[0] = rate + alpha0 * (0.0 - rate)
                    rate = buf[0]
                final[j] = (rate, repeats, run, n + T)
                continue
            for t in range(T):
                rep = reps[t]
                if rep:
                    at.append((t, j))
                    before.append((rate, repeats, run, n))
                    buf[0] = run + 1.0
                    run = buf[0]
                    buf[0] = repeats + 1.0
                    repeats = buf[0]
                else:
                    run = 0.0
                if n >= 1:
                    inv = 1.0 / (n if n > 1.0 else 1.0)
                    alpha = inv if inv > alpha0 else alpha0
                    buf[0] = rate + alpha * ((1.0 if rep else 0.0) - rate)
                    rate = buf[0]
                buf[0] = n + 1.0
                n = buf[0]
            final[j] = (rate, repeats, run, n)
        out = np.zeros((T, K))
        if at:  # the rare case: some key repeated its value
            t_at, j_at = np.array(at).T
            rate_b, repeats_b, run_b, n_b = np.array(before).T
            news = (n_b >= d.min_steps) & (rate_b < NORM_RATE)
            out[t_at[news], j_at[news]] = (run_b[news] + 1.0) * -np.log10(
                rate_before_run(rate_b[news], repeats_b[news], run_b[news], n_b[news], alpha0))
        a["s.stuck.stats"][rows] = final
        a["s.stuck.prev"][rows] = b.x[-1]
        return out


class _Likelihood(_Kernel):
    def run(self, table: StateTable, rows: np.ndarray, b: Block) -> np.ndarray:
        d = self.d
        T, K = b.z.shape[:2]
        raw = np.log1p(b.z2() / b.n_features)
        a = table.arrays
        mean0, var0 = _wide(table, "s.likelihood.mean", rows).tolist(), _wide(table, "s.likelihood.var", rows).tolist()
        recent0, n0 = _wide(table, "s.likelihood.recent", rows).tolist(), a["s.likelihood.n"][rows]
        q = np.empty((K, T))
        final = np.empty((3, K))
        buf, short, se, alpha0 = _rounder(), d.short, d.se, d.alpha
        for j, n in enumerate(n0.tolist()):
            mean, var, recent, qj, raws = mean0[j], var0[j], recent0[j], q[j], raw[:, j].tolist()
            for t in range(T):
                r = raws[t]
                recent = r if n == 0 else recent + short * (r - recent)
                qj[t] = (recent - mean) / (math.sqrt(var if var > 1e-12 else 1e-12) * se)
                buf[0] = recent
                recent = buf[0]
                n += 1
                inv = 1.0 / (n if n > 1 else 1)
                alpha = inv if inv > alpha0 else alpha0
                dv = r - mean
                buf[0] = mean + alpha * dv
                mean = buf[0]
                buf[0] = (1.0 - alpha) * (var + alpha * dv * dv)
                var = buf[0]
            final[:, j] = (mean, var, recent)
        ready = (n0[None, :] + np.arange(T)[:, None]) >= d.min_steps
        out = np.where(ready, upper_surprise(q.T), 0.0)
        a["s.likelihood.mean"][rows], a["s.likelihood.var"][rows], a["s.likelihood.recent"][rows] = final
        a["s.likelihood.n"][rows] = n0 + T
        return np.asarray(out)


_KERNELS: dict[str, Any] = {"gaussian": _Gaussian, "volatility": _Volatility, "stuck": _Stuck,
                            "likelihood": _Likelihood}


def kernel_of(detector: Any) -> Any | None:
    """The block kernel of a detector, or None (it is then stepped wave by wave)."""
    name = getattr(detector, "name", "")
    if name == "volatility" and detector.garch:
        return None
    if hasattr(detector, "block_kernel"):  # a detector in its own module brings its own (consumer.reversal)
        return detector.block_kernel()
    kind = _KERNELS.get(name)
    return None if kind is None else kind(detector)


def calibrate_block(c: TailCalibrator, table: StateTable, rows: np.ndarray, raw: np.ndarray,
                    learn: np.ndarray) -> np.ndarray:
    """:meth:`TailCalibrator.calibrate` over T steps of K keys (raw, learn: [T, K]), one step after another."""
    T, K = raw.shape
    a = table.arrays
    nu, n1, n2, nk = c._names
    u0l, m1l = _wide(table, nu, rows).tolist(), _wide(table, n1, rows).tolist()
    m2l, kl = _wide(table, n2, rows).tolist(), _wide(table, nk, rows).tolist()
    us: list[list[float]] = []
    hit_t, hit_j, hit_m1, hit_m2, hit_x = [], [], [], [], []
    buf = _rounder()
    eta, level, alpha, prior, top = c.eta, c.level, c.alpha, c.prior, MAX_EXCESS
    down, up = -level, 1.0 - level
    all_learn = every(learn)
    for j in range(K):
        u, m1, m2, k = u0l[j], m1l[j], m2l[j], kl[j]
        raws = raw[:, j].tolist()
        learns = None if all_learn else learn[:, j].tolist()
        uj: list[float] = []
        put = uj.append
        if learns is None:  # the common case: every step learns; below the quantile u only steps down
            dn = (eta * m1) * down
            for t, r in enumerate(raws):
                put(u)
                x = r - u
                if x > 0:
                    hit_t.append(t)
                    hit_j.append(j)
                    hit_m1.append(m1)
                    hit_m2.append(m2)
                    hit_x.append(x)
                    new_u = u + (eta * m1) * up
                    s = 1.0 / (k + 1.0 + prior)
                    step = s if s > alpha else alpha
                    xm = x if x < top else top
                    m1, m2 = _f32(buf, m1 + step * (xm - m1)), _f32(buf, m2 + step * (xm * xm - m2))
                    buf[0] = k + 1.0
                    k = buf[0]
                    dn = (eta * m1) * down
                else:
                    new_u = u + dn
                buf[0] = new_u if new_u > 1e-6 else 1e-6
                u = buf[0]
        else:
            for t in range(T):
                put(u)
                x = raws[t] - u
                lrn = learns[t]
                if x > 0:
                    hit_t.append(t)
                    hit_j.append(j)
                    hit_m1.append(m1)
                    hit_m2.append(m2)
                    hit_x.append(x)
                    new_u = u + (eta * m1) * up
                    if lrn:
                        s = 1.0 / (k + 1.0 + prior)
                        step = s if s > alpha else alpha
                        xm = x if x < top else top
                        m1, m2 = _f32(buf, m1 + step * (xm - m1)), _f32(buf, m2 + step * (xm * xm - m2))
                        buf[0] = k + 1.0
                        k = buf[0]
                else:
                    new_u = u + (eta * m1) * down
                if lrn:
                    buf[0] = new_u if new_u > 1e-6 else 1e-6
                    u = buf[0]
        us.append(uj)
        u0l[j], m1l[j], m2l[j], kl[j] = u, m1, m2, k
    out = raw * (c.u0 / np.maximum(np.array(us).T, 1e-9))
    if hit_t:
        at = (np.array(hit_t), np.array(hit_j))
        out[at] = c.u0 + c._pareto(np.array(hit_m1), np.array(hit_m2), np.array(hit_x))
    a[nu][rows], a[n1][rows], a[n2][rows], a[nk][rows] = (np.array(v) for v in (u0l, m1l, m2l, kl))
    return np.asarray(np.maximum(out, 0.0))
