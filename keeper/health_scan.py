"""Exact, vectorised maintenance-health scan of many sub-accounts after a price tick (sans-I/O).

The keeper has to answer "which sub-accounts have ``H_mm < 0`` now?" for ~100k accounts in a
few milliseconds, with exactly the answer :func:`crossbook.margin.compute_health` (and so the
contract) gives. numpy's int64 cannot hold ``size * price`` (up to 2**143), and floats are not
allowed on a state path, so the scan is split in two:

1. **Screen** (numpy, int64 only): a lower bound ``lo`` with ``lo <= H_mm <= lo + err`` for
   every account in the *scan domain*; outside it the account is flagged ``bad``.
2. **Exact check** (Python ints): :func:`compute_health` for every account with
   ``bad or lo < 0``. An account with ``lo >= 0`` has ``H_mm >= 0`` and is provably healthy.

So the liquidatable set is exact, and every liquidatable account comes with its exact
:class:`Health` (the liquidator ranks by it).

Error bound (see docs in ``_scan_markets`` / ``_scan_collateral`` for the derivations):

* Positions are **exact**. With ``D5 = 10**5`` split ``size = a*D5 + b`` (``0 <= b < D5``,
  precomputed when the account changes) and ``price = c*D5 + e`` (per tick). Then
  ``size*price = a*c*10**10 + t*D5 + h`` where ``b*e = g*D5 + h`` and ``t = a*e + b*c + g``;
  writing ``t = u*D5 + v`` gives ``size*price = (a*c + u)*10**10 + (v*D5 + h)`` with
  ``0 <= v*D5 + h < 10**10``, hence ``PV = floor(size*price/10**10) = a*c + u`` and the
  remainder is non-zero iff ``v != 0 or h != 0``. Notional is ``PV + [rem != 0]`` for a long
  and ``-PV`` for a short (``ceil(-x) = -floor(x)``). Each tier term
  ``ceil(portion*f/PPM)`` is ``q*f + ceil(r*f/PPM)`` with ``portion = q*PPM + r``: exact too.
* Accrued funding is exact: it only changes on a funding update or an account change, so it
  is computed with Python ints then and cached as an int64 per account.
* Collateral is the only approximation. ``V = floor(amount*p/Q)`` with ``Q = 10**(dec+2)``;
  split ``amount = x*Q + y`` and keep ``f = floor(y * 2**31 / Q)``, so
  ``f/2**31 <= y/Q < (f+1)/2**31``. The screen uses ``V_lo = x*p + floor(f*p / 2**31)``
  (``floor(f*p/2**31) = f*(p>>31) + floor(f*(p & (2**31-1)) / 2**31)``, no overflow), and
  ``V_lo <= V <= V_lo + ceil(p / 2**31)`` because ``floor(A + B) <= floor(A) + ceil(B)``.
  Weighting is monotone and ``floor((V+d)w/PPM) - floor(Vw/PPM) <= ceil(d*w/PPM) <= d`` for
  ``w <= PPM``, so ``W_lo <= W <= W_lo + ceil(p/2**31)``. Per account
  ``err = sum over assets with y != 0 of ceil(p_a / 2**31)`` (about 140 atoms = $0.00014
  for ETH at $3,000); accounts without fractional collateral are screened exactly.

Overflow: every term of ``H`` (quote, cached funding, ``PV_m``, ``R_m``, ``W_a``) is kept below
``2*G`` with ``G = 2**62 // (2M + K + 2) // 2`` by the domain guards (``|quote| <= G``,
``|funding| <= G``, ``|a| <= G // max(c, D5)``, ``x <= G // p``, prices ``< 2**55``), so the
sum of the ``2M + K + 2`` terms stays below ``2**62``; intermediate products are bounded the
same way (``b*c < 2**17 * 2**39``, ``b*e < 10**10``, ``f*pl < 2**62``). An account outside
the domain is simply checked exactly, never mis-screened.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Hashable, Mapping

import numpy as np
import numpy.typing as npt

from crossbook.fixedpoint import NOTIONAL_DIV, PPM
from crossbook.margin import Health, RiskParams, SubAccount, compute_health

D5 = 100_000  # sqrt(NOTIONAL_DIV): splitting both factors at 1e5 makes the 1e10 division exact
assert D5 * D5 == NOTIONAL_DIV
I62 = 2**62
FRAC_BITS = 31
FRAC_ONE = 1 << FRAC_BITS
FRAC_MASK = FRAC_ONE - 1
MAX_SCAN_PRICE = 2**55  # keeps c = p // D5 < 2**39 and p >> 31 < 2**24 (see bounds above)

I64 = npt.NDArray[np.int64]
B8 = npt.NDArray[np.bool_]


@dataclass
class ScanResult:
    """Outcome of one :meth:`HealthBook.scan`.

    ``lo``/``err`` are per row: ``lo <= H_mm <= lo + err`` for rows not in ``checked`` (and
    meaningless for rows that were out of the scan domain). ``exact`` holds the exact
    :class:`Health` of every row that needed the exact check; ``liquidatable`` lists the rows
    with ``H_mm < 0``, most negative first (largest shortfall first); ``unpriced`` rows need a
    price that was not supplied (the contract would revert ``OracleUnavailable``).
    """

    lo: I64
    err: I64
    exact: dict[int, Health] = field(default_factory=dict)
    liquidatable: list[int] = field(default_factory=list)
    unpriced: list[int] = field(default_factory=list)
    out_of_domain: int = 0

    @property
    def n_exact(self) -> int:
        """How many rows went through the exact Python check."""
        return len(self.exact) + len(self.unpriced)

    def is_liquidatable(self, row: int) -> bool:
        """Exact: ``H_mm < 0`` for this row at the scanned prices."""
        h = self.exact.get(row)
        return h is not None and h.maintenance_health < 0

    def bounds(self, row: int) -> tuple[int, int]:
        """``(lo, hi)`` with ``lo <= H_mm <= hi`` (equal when the row was checked exactly)."""
        h = self.exact.get(row)
        if h is not None:
            return h.maintenance_health, h.maintenance_health
        return int(self.lo[row]), int(self.lo[row]) + int(self.err[row])


class HealthBook:
    """In-memory state of many sub-accounts, laid out for the vectorised scan.

    Rows are stable per key (``key`` is any hashable, e.g. ``(owner, subaccount)``);
    :meth:`set_account` must be called whenever an account changes, :meth:`set_funding`
    whenever a cumulative funding index changes.
    """

    # storage, allocated (and grown) by _alloc; see _encode for what each holds
    _quote: I64  # quote balance (0 when out of domain)
    _owed: I64  # exact accrued funding, sum over markets
    _bad: B8  # row outside the price-independent scan domain
    _a: I64  # (M, cap) floor(size / 1e5)
    _b: I64  # (M, cap) size mod 1e5
    _has: B8  # (M, cap) non-zero position
    _long: B8  # (M, cap) size > 0
    _x: I64  # (K, cap) amount // 10**(decimals+2)
    _f: I64  # (K, cap) floor(frac * 2**31) of the rest
    _held: B8  # (K, cap) non-zero balance
    _fnz: B8  # (K, cap) fractional part non-zero (adds to the error bound)

    def __init__(self, params: RiskParams, funding: Mapping[int, int] | None = None,
                 capacity: int = 1024) -> None:
        self.params = params
        self.market_ids: list[int] = sorted(params.markets)
        self.asset_ids: list[int] = sorted(a for a in params.collaterals if a != 0)
        self._mcol = {m: j for j, m in enumerate(self.market_ids)}
        self._acol = {a: j for j, a in enumerate(self.asset_ids)}
        m, k = len(self.market_ids), len(self.asset_ids)
        self.G = I62 // (2 * m + k + 2) // 2
        self.funding: dict[int, int] = {mk: 0 for mk in self.market_ids}
        if funding:
            self.funding.update(funding)
        # tier bands as (M, B) tables; padding bands start at 2**62 (never reached in-domain)
        nb = max((len(params.markets[mk].bands) for mk in self.market_ids), default=1)
        self._lo = np.full((nb, m), I62, np.int64)
        self._width = np.zeros((nb, m), np.int64)
        self._mmf = np.zeros((nb, m), np.int64)
        for j, mk in enumerate(self.market_ids):
            for bi, (lo, width, _imf, mmf) in enumerate(params.markets[mk].bands):
                self._lo[bi, j] = min(lo, I62)
                self._width[bi, j] = min(width, I62)
                self._mmf[bi, j] = mmf
        # A band row is "bounded" when width*mmf fits int64 for every market in it (then
        # portion*mmf is computed directly); otherwise the q*PPM + r split is used.
        self._bands: list[tuple[I64, I64, I64, bool]] = []
        for bi in range(nb):
            bounded = all(int(w) * int(f) < I62 for w, f in zip(self._width[bi], self._mmf[bi]))
            self._bands.append((self._lo[bi][:, None], self._width[bi][:, None], self._mmf[bi][:, None], not bounded))
        self._chunk = 4096
        self._value_div = [params.collaterals[a].value_div for a in self.asset_ids]
        self._w_maint = np.array([params.collaterals[a].weight_maint_ppm for a in self.asset_ids], np.int64)[:, None]
        self.n = 0
        self.keys: list[Hashable] = []
        self.accounts: list[SubAccount] = []
        self.row_of: dict[Hashable, int] = {}
        self._alloc(max(capacity, 1))

    # --- storage ---------------------------------------------------------------------------
    def _alloc(self, cap: int) -> None:
        m, k = len(self.market_ids), len(self.asset_ids)
        old = self.__dict__.get("_quote")
        n = self.n

        def grow(name: str, shape: tuple[int, ...], dtype: type) -> None:
            arr: npt.NDArray[Any] = np.zeros(shape, dtype)
            if old is not None:
                arr[..., :n] = getattr(self, name)[..., :n]
            setattr(self, name, arr)

        # per-market / per-asset arrays are (columns, rows): each market's row is contiguous,
        # so the scan broadcasts one scalar price over a long inner loop

        grow("_quote", (cap,), np.int64)
        grow("_owed", (cap,), np.int64)
        grow("_bad", (cap,), np.bool_)
        grow("_a", (m, cap), np.int64)
        grow("_b", (m, cap), np.int64)
        grow("_has", (m, cap), np.bool_)
        grow("_long", (m, cap), np.bool_)
        grow("_x", (k, cap), np.int64)
        grow("_f", (k, cap), np.int64)
        grow("_held", (k, cap), np.bool_)
        grow("_fnz", (k, cap), np.bool_)
        self.capacity = cap

    def __len__(self) -> int:
        return self.n

    def set_account(self, key: Hashable, account: SubAccount) -> int:
        """Insert or replace the state of ``key``; returns its row. O(markets + assets) Python."""
        row = self.row_of.get(key)
        if row is None:
            if self.n == self.capacity:
                self._alloc(self.capacity * 2)
            row = self.n
            self.n += 1
            self.row_of[key] = row
            self.keys.append(key)
            self.accounts.append(account)
        else:
            self.accounts[row] = account
        self._encode(row)
        return row

    def _encode(self, row: int) -> None:
        acct = self.accounts[row]
        g = self.G
        bad = not -g <= acct.quote <= g
        self._quote[row] = acct.quote if not bad else 0
        self._a[:, row] = 0
        self._b[:, row] = 0
        self._has[:, row] = False
        self._long[:, row] = False
        for mk, pos in acct.positions.items():
            if not pos.size:
                continue
            j = self._mcol.get(mk)
            if j is None:
                bad = True  # unknown market: let compute_health raise for it
                continue
            a, b = divmod(pos.size, D5)
            if not -I62 < a < I62:
                bad = True
                continue
            self._a[j, row], self._b[j, row] = a, b
            self._has[j, row] = True
            self._long[j, row] = pos.size > 0
        self._x[:, row] = 0
        self._f[:, row] = 0
        self._held[:, row] = False
        self._fnz[:, row] = False
        for asset, amount in acct.collateral.items():
            if not amount:
                continue
            j = self._acol.get(asset)
            if j is None:
                bad = True
                continue
            q = self._value_div[j]
            x, y = divmod(amount, q)
            if x >= I62:
                bad = True
                continue
            self._x[j, row], self._f[j, row] = x, (y << FRAC_BITS) // q
            self._held[j, row] = True
            self._fnz[j, row] = y != 0
        owed = self._owed_of(acct)
        if owed is None or not -g <= owed <= g:
            bad = True
            owed = 0
        self._owed[row] = owed
        self._bad[row] = bad

    def _owed_of(self, acct: SubAccount) -> int | None:
        """Exact accrued funding ``sum_m ceil(size*(F - snap)/1e10)``; None if a market's index
        is unknown (the exact path then reports it)."""
        total = 0
        for mk, pos in acct.positions.items():
            if pos.size:
                f = self.funding.get(mk)
                if f is None:
                    return None
                total -= (pos.size * (pos.funding_snapshot - f)) // NOTIONAL_DIV
        return total

    def set_funding(self, funding: Mapping[int, int]) -> None:
        """New cumulative funding indices; re-derives the cached funding of affected rows."""
        changed = [self._mcol[mk] for mk, f in funding.items() if mk in self._mcol and self.funding.get(mk) != f]
        self.funding.update(funding)
        if not changed or not self.n:
            return
        rows = np.flatnonzero(self._has[changed, : self.n].any(axis=0))
        for row in rows.tolist():
            self._encode(row)

    # --- scan ------------------------------------------------------------------------------
    def scan(self, asset_prices: Mapping[int, int], market_prices: Mapping[int, int]) -> ScanResult:
        """Screen every row at these oracle prices, then check the uncertain ones exactly."""
        n = self.n
        bad = self._bad[:n].copy()
        pv_sum, req_sum = self._scan_markets(market_prices, bad)
        w_sum, err = self._scan_collateral(asset_prices, bad)
        lo = self._quote[:n] + pv_sum - self._owed[:n] + w_sum - req_sum
        res = ScanResult(lo=lo, err=err)
        res.out_of_domain = int(bad.sum())
        rows = np.flatnonzero(bad | (lo < 0))
        params, funding = self.params, self.funding
        neg: list[tuple[int, int]] = []
        for row in rows.tolist():
            try:
                h = compute_health(self.accounts[row], params, asset_prices, market_prices, funding)
            except KeyError:
                res.unpriced.append(row)
                continue
            res.exact[row] = h
            if h.maintenance_health < 0:
                neg.append((h.maintenance_health, row))
        neg.sort()
        res.liquidatable = [row for _, row in neg]
        return res

    def _scan_markets(self, market_prices: Mapping[int, int], bad: B8) -> tuple[I64, I64]:
        """Exact ``sum_m PV_m`` and ``sum_m R_m^maint`` per row (see the module docstring);
        rows outside the domain are marked in ``bad`` and their sums are garbage.

        Works on row chunks that stay in the CPU cache, with scratch buffers reused across
        operations: at 100k x 8 the same arithmetic on whole arrays is 3x slower, dominated by
        page faults of fresh multi-megabyte temporaries rather than by the arithmetic.
        """
        n = self.n
        m = len(self.market_ids)
        c = np.zeros((m, 1), np.int64)
        e = np.zeros((m, 1), np.int64)
        lim = np.full((m, 1), -1, np.int64)  # |a| > -1 flags every holder: that market goes exact
        for j, mk in enumerate(self.market_ids):
            p = market_prices.get(mk)
            if p is not None and 0 <= p < MAX_SCAN_PRICE:
                cj, ej = divmod(p, D5)
                c[j, 0], e[j, 0] = cj, ej
                lim[j, 0] = self.G // max(cj, D5)
        pv_sum = np.empty(n, np.int64)
        req_sum = np.empty(n, np.int64)
        step = self._chunk
        sh = (m, step)
        be, g, t, u, pv, tmp, notional, req, portion = (np.empty(sh, np.int64) for _ in range(9))
        flag = np.empty(sh, np.bool_)
        inexact = np.empty(sh, np.bool_)
        bands = self._bands
        for r0 in range(0, n, step):
            r1 = min(n, r0 + step)
            k = r1 - r0
            a, b = self._a[:, r0:r1], self._b[:, r0:r1]
            be_, g_, t_, u_, pv_, tmp_ = be[:, :k], g[:, :k], t[:, :k], u[:, :k], pv[:, :k], tmp[:, :k]
            fl, ix, nt, rq, po = flag[:, :k], inexact[:, :k], notional[:, :k], req[:, :k], portion[:, :k]
            # domain guard: |a| <= G // max(c, D5) bounds a*c and a*e by G
            np.abs(a, out=tmp_)
            np.greater(tmp_, lim, out=fl)
            fl &= self._has[:, r0:r1]
            bad[r0:r1] |= fl.any(axis=0)
            np.multiply(b, e, out=be_)
            np.floor_divide(be_, D5, out=g_)
            np.multiply(a, e, out=t_)
            np.multiply(b, c, out=tmp_)
            t_ += tmp_
            t_ += g_
            np.floor_divide(t_, D5, out=u_)
            np.multiply(a, c, out=pv_)
            pv_ += u_
            # remainder of size*price by 1e10 is v*D5 + h: non-zero iff v != 0 or h != 0
            u_ *= D5
            np.not_equal(t_, u_, out=ix)
            g_ *= D5
            np.not_equal(be_, g_, out=fl)
            ix |= fl
            ix &= self._long[:, r0:r1]
            # notional: |PV| for a short (ceil(-x) = -floor(x)), PV + [rem != 0] for a long
            np.abs(pv_, out=nt)
            nt += ix
            rq[...] = 0
            for lo, width, mmf, split in bands:
                np.subtract(nt, lo, out=po)
                np.maximum(po, 0, out=po)
                np.minimum(po, width, out=po)
                if split:
                    # unbounded band: portion*mmf may overflow, split portion = q*PPM + r
                    np.floor_divide(po, PPM, out=tmp_)
                    np.multiply(tmp_, PPM, out=u_)
                    po -= u_
                    tmp_ *= mmf
                    rq += tmp_
                # else a bounded band: width * mmf < 2**62 was checked at construction
                po *= mmf
                po += PPM - 1
                po //= PPM
                rq += po
            pv_.sum(axis=0, out=pv_sum[r0:r1])
            rq.sum(axis=0, out=req_sum[r0:r1])
        return pv_sum, req_sum

    def _scan_collateral(self, asset_prices: Mapping[int, int], bad: B8) -> tuple[I64, I64]:
        """Lower bound of ``sum_a W_a^maint`` per row and its error bound (module docstring)."""
        n = self.n
        k = len(self.asset_ids)
        if k == 0:
            z = np.zeros(n, np.int64)
            return z, z.copy()
        px = np.zeros((k, 1), np.int64)
        lim = np.full((k, 1), -1, np.int64)
        ev = np.zeros((k, 1), np.int64)
        for j, asset in enumerate(self.asset_ids):
            p = asset_prices.get(asset)
            if p is not None and 0 <= p < MAX_SCAN_PRICE:
                px[j] = p
                lim[j] = self.G // max(p, 1)
                ev[j] = -((-p) >> FRAC_BITS)  # ceil(p / 2**31)
        w_sum = np.empty(n, np.int64)
        err = np.empty(n, np.int64)
        ph, pl = px >> FRAC_BITS, px & FRAC_MASK
        step = self._chunk
        v, q, tmp = (np.empty((k, step), np.int64) for _ in range(3))
        fl = np.empty((k, step), np.bool_)
        for r0 in range(0, n, step):
            r1 = min(n, r0 + step)
            kk = r1 - r0
            x, f = self._x[:, r0:r1], self._f[:, r0:r1]
            v_, q_, t_, f_ = v[:, :kk], q[:, :kk], tmp[:, :kk], fl[:, :kk]
            np.greater(x, lim, out=f_)
            f_ &= self._held[:, r0:r1]
            bad[r0:r1] |= f_.any(axis=0)
            # V_lo = x*p + floor(f*p / 2**31), with f*p split at bit 31 so nothing overflows
            np.multiply(x, px, out=v_)
            np.multiply(f, ph, out=t_)
            v_ += t_
            np.multiply(f, pl, out=t_)
            t_ >>= FRAC_BITS
            v_ += t_
            # W_lo = floor(V_lo * w / PPM) = (V//PPM)*w + ((V%PPM)*w)//PPM
            np.floor_divide(v_, PPM, out=q_)
            np.multiply(q_, PPM, out=t_)
            v_ -= t_
            v_ *= self._w_maint
            v_ //= PPM
            q_ *= self._w_maint
            v_ += q_
            v_.sum(axis=0, out=w_sum[r0:r1])
            np.multiply(self._fnz[:, r0:r1], ev, out=t_)
            t_.sum(axis=0, out=err[r0:r1])
        return w_sum, err
