--- Experiment 3: meta-gradient descent on the log meta-objective G converges to the best step
-- size of gradient descent on a fixed quadratic (paper, Section 3 and Figures 1-2), while the
-- same loop on the naive objective F, or with plain back-propagation as in the authors'
-- TensorFlow code, does not.
--
-- Setting (docs/paper.md, experiment 1): H = X^T X with X a 20x20 standard Gaussian matrix,
-- w0 ~ N(0, I), inner GD for T steps with step eta; meta-GD on eta with meta step 1/(100 sqrt k),
-- eta projected back to 0 when it goes negative.
--
-- The reference optimum of G comes from lib/oracle.lua's closed form on the eigendecomposition
-- of H, on a fine grid refined by golden-section search. Near the optimum meta-GD saw-tooths
-- across the kink of G until k is in the thousands, so the eta after exactly 1000 meta-steps is
-- decided by rounding; the criteria judge the dynamics instead: over many random quadratics,
-- whether eta_k stays within 1% of the optimum from some k <= 300 on, and the share of meta-steps
-- k in [300, 1000] within 1%.
local oracle = require "lib.oracle"
local report = require "lib.report"

local M = {title = "Meta-gradient descent on the log objective converges"}

-- ---------------------------------------------------------------- settings per mode

-- iterations: the paper's meta-steps; long: a longer run (x iterations) continues the same
-- trajectories to show whether a miss is slow convergence or none; draws: independent draws
-- of (X, w0) for the robustness table (runs continued to long x iterations); claim_draws:
-- draws for the Figure-1 criteria (the paper's iterations only; the first `draws` are shared).
local SETTINGS = {
  quick = {
    iterations = 1000, long = 2, eta0s = {0.01, 0.1}, Ts = {10, 40, 80, 160}, cmp_Ts = {80, 160},
    grid = 1500, draws = 5, claim_draws = 12,
  },
  default = {
    iterations = 1000, long = 4, eta0s = {0.001, 0.01, 0.03, 0.05, 0.1}, Ts = {10, 20, 40, 80, 160, 320},
    cmp_Ts = {80, 160, 320}, grid = 4000, draws = 20, claim_draws = 200,
  },
  full = {
    iterations = 1000, long = 4, eta0s = {0.001, 0.003, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2},
    Ts = {5, 10, 20, 40, 80, 160, 320, 640, 1280}, cmp_Ts = {80, 160, 320, 640}, grid = 8000, draws = 50,
    claim_draws = 500,
  },
}

local D = 20            -- dimension of the quadratic (paper)
local T_MAIN = 80       -- the paper's Figure 1 horizon
local ETA_HARD = 0.1    -- the paper's starting point in the divergent range
local META_LR = 0.01    -- 1/100: meta step 1/(100 sqrt k)
local TF_CLIP = 1e4     -- the authors' TensorFlow clipping
local TOL = 0.01        -- "within 1%" of the grid optimum
-- The Figure-1 claim: converged within about 300 meta-steps, judged on meta-steps [K_CLAIM, K].
local K_CLAIM = 300
local SETTLED_MIN = 0.5 -- the claim holds if at least half the draws settle by k = K_CLAIM ...
local SHARE_MIN = 0.9   -- ... and on average 90% of the meta-steps in [K_CLAIM, K] are within 1%
local SHARE_FAIL = 0.1  -- a loop "fails" when at most 10% of those meta-steps are within 1%,
local SHARE_MOST = 0.5  -- and does clearly worse than a stable loop with at least 50% of them

-- A share in whole percent, for the texts.
local function pc(x) return math.floor(100 * x + 0.5) end

-- ---------------------------------------------------------------- float32 TensorFlow emulation

-- Rounds a double to the nearest float32 (overflow to +-inf, underflow to denormals/0), as the
-- authors' TensorFlow graph stored every intermediate.
local function f32(x) return (string.unpack("f", string.pack("f", x))) end

local function matvec32(H, v)
  local d, out = #v, {}
  for i = 1, d do
    local s, Hi = 0, H[i]
    for j = 1, d do s = s + Hi[j] * v[j] end
    out[i] = f32(s)
  end
  return out
end

-- G(eta) and dG/deta by plain back-propagation through T steps of GD in float32.
-- Dot products accumulate in double and are rounded once (slightly more accurate than float32
-- throughout; the range, which is what fails, is float32's).
local function tf32_value_and_grad(H, w0, eta, T)
  local d, e = #w0, f32(eta)
  local gs, w = {}, w0
  for t = 0, T - 1 do
    local g = matvec32(H, w)
    gs[t] = g
    local nw = {}
    for i = 1, d do nw[i] = f32(w[i] - f32(e * g[i])) end
    w = nw
  end
  local gT = matvec32(H, w)
  local s = 0
  for i = 1, d do s = s + w[i] * gT[i] end
  local f = f32(0.5 * s)
  local G = f32(f32(math.log(f)) / T)
  -- Adjoint of w_T: dG/dw_T = H w_T / (T f); then a_t = (I - eta H) a_{t+1}.
  local dGdf = f32(f32(1 / f) / T)
  local a = {}
  for i = 1, d do a[i] = f32(dGdf * gT[i]) end
  local geta = 0
  for t = T - 1, 0, -1 do
    local sg = 0
    for i = 1, d do sg = sg + gs[t][i] * a[i] end
    geta = f32(geta - f32(sg))
    local Ha = matvec32(H, a)
    local na = {}
    for i = 1, d do na[i] = f32(a[i] - f32(e * Ha[i])) end
    a = na
  end
  return G, geta
end

-- The authors' meta-training loop on the float32 gradient above: non-finite meta-gradients
-- replaced by 0, then clipped to [-1e4, 1e4]; meta step 1/(100 sqrt k) and projection to eta >= 0
-- as in ms.meta.train.
local function train_tf32(H, w0, eta0, T, iterations)
  local eta, etas, nonfinite = f32(eta0), {}, 0
  local last_eta, last_g -- a run stuck at one eta repeats the same (deterministic) gradient
  for k = 1, iterations do
    etas[k] = eta
    local g
    if eta == last_eta then g = last_g else g = select(2, tf32_value_and_grad(H, w0, eta, T)) end
    last_eta, last_g = eta, g
    if g ~= g or g == math.huge or g == -math.huge then
      nonfinite = nonfinite + 1
      g = 0
    end
    g = math.max(-TF_CLIP, math.min(TF_CLIP, g))
    eta = f32(math.max(0, eta - f32(META_LR / math.sqrt(k) * g)))
  end
  etas[iterations + 1] = eta
  return etas, nonfinite
end

-- H and w0 of a problem rounded to float32, as plain tables.
local function float32_problem(P)
  local Hrows, w0t = {}, {}
  local Ht = P.H:totable()
  for i = 1, D do
    Hrows[i] = {}
    for j = 1, D do Hrows[i][j] = f32(Ht[i][j]) end
  end
  for i, v in ipairs(P.w0:totable()) do w0t[i] = f32(v) end
  return Hrows, w0t
end

-- ---------------------------------------------------------------- trajectories

local function relerr(eta, opt)
  local r = math.abs(eta - opt) / opt
  if r ~= r then return math.huge end
  return r
end

-- eta_1 = eta0, ..., eta_{K+1} = the learned step size, from a train() result, and the library's
-- meta-gradients g_k at eta_k.
local function etas_of(res, K)
  local etas, grads = {}, {}
  for k = 1, K do
    local h = res.history[k]
    etas[k], grads[k] = h.theta.lr, h.grad.lr
  end
  etas[K + 1] = res.theta.lr
  return etas, grads
end

-- The first K + 1 entries of a list.
local function head(list, K)
  local out = {}
  for k = 1, K + 1 do out[k] = list[k] end
  return out
end

-- First k from which every eta_j (j >= k) stays within TOL of opt; nil when the last does not.
local function settle_k(etas, opt)
  local k
  for j = #etas, 1, -1 do
    if relerr(etas[j], opt) <= TOL then k = j else break end
  end
  return k
end

-- Largest relative distance to opt over the last tenth of a run.
local function tail_max(etas, opt)
  local m = 0
  for k = #etas - math.max(1, (#etas - 1) // 10) + 1, #etas do m = math.max(m, relerr(etas[k], opt)) end
  return m
end

-- Share of the meta-steps k in [K_CLAIM, K] whose eta_k is within TOL of opt.
local function window_share(etas, opt, K)
  local n = 0
  for k = K_CLAIM, K do if relerr(etas[k], opt) <= TOL then n = n + 1 end end
  return n / (K - K_CLAIM + 1)
end

-- The dynamics of the paper's K meta-steps of a run against opt: settles within 1% at
-- meta-step `settle` (nil: not by K + 1), `settled` when that is at most K_CLAIM, and the
-- share of meta-steps in [K_CLAIM, K] within 1%.
local function dynamics(etas, opt, K)
  local settle = settle_k(head(etas, K), opt)
  return {settle = settle, settled = settle ~= nil and settle <= K_CLAIM, share = window_share(etas, opt, K)}
end

local function count_nonfinite(grads)
  local nonok, ninf = 0, 0
  for _, g in ipairs(grads) do
    if math.abs(g) == math.huge then ninf = ninf + 1 end
    if g ~= g or math.abs(g) == math.huge then nonok = nonok + 1 end
  end
  return nonok, ninf
end

-- ---------------------------------------------------------------- problems and runs

-- The quadratic of draw j from a seed: H = X^T X with X 20x20 standard Gaussian, w0 ~ N(0, I);
-- its spectrum by the library's eigh (the oracle's closed form reads only lam and c).
local function make_problem(ms, seed, j)
  local H = oracle.paper_quadratic(ms, D, seed * 1000 + 301 + 10 * j)
  local w0 = ms.randn({D}, {seed = seed * 1000 + 302 + 10 * j})
  local lam, Q = ms.eigh(H)
  local sp = oracle.spectrum(lam:totable(), ms.matvec(Q:t(), w0):totable())
  return {H = H, w0 = w0, obj = ms.objective.quadratic(H), sp = sp, lmin = sp.lam[1], lmax = sp.lam[#sp.lam]}
end

-- Meta-GD on eta with the paper's loop: meta step META_LR/sqrt(k), eta projected to [0, inf).
local function train(ms, P, T, eta0, iterations, extra)
  local spec = {objective = P.obj, w0 = P.w0, optimizer = ms.optim.gd{lr = eta0}, steps = T, meta = "log",
    method = "stable", iterations = iterations, meta_lr = META_LR, schedule = "inv_sqrt",
    bounds = {lr = {0, math.huge}}, progress = false}
  for k, v in pairs(extra or {}) do spec[k] = v end
  return ms.meta.train(spec)
end

-- A stable log-objective run of KL meta-steps from eta0 at T; the first K steps are exactly the
-- paper's run (the schedule depends on k only).
local function stable_run(ms, R, T, eta0)
  local K, KL, opt = R.K, R.KL, R.opt[T]
  local etas, grads = etas_of(train(ms, R.P, T, eta0, KL), KL)
  local r = {T = T, eta0 = eta0, etas_long = etas, grads = grads, etas = head(etas, K)}
  r.nonok_long = count_nonfinite(grads)
  r.nonok = count_nonfinite(head(grads, K - 1))
  r.final, r.final_long = r.etas[K + 1], etas[KL + 1]
  r.rel, r.rel_long = relerr(r.final, opt), relerr(r.final_long, opt)
  r.tail, r.tail_long = tail_max(r.etas, opt), tail_max(etas, opt)
  r.settle, r.settle_long = settle_k(r.etas, opt), settle_k(etas, opt)
  r.dyn = dynamics(etas, opt, K)
  return r
end

-- The stable run from (T, eta0), computed once.
local function cached_run(ms, R, T, eta0)
  local key = T .. ":" .. eta0
  if not R.cache[key] then R.cache[key] = stable_run(ms, R, T, eta0) end
  return R.cache[key]
end

-- ---------------------------------------------------------------- measure

-- The closed form against the library's meta-objective at a few points (any disagreement is a
-- bug), and the library's stable G'(eta_k) along the eta0 = 0.1 run against the closed form.
local function measure_checks(ms, R)
  local P = R.P
  R.oracle_diff = 0
  for _, eta in ipairs{0.005, 0.02, 0.033, 0.05, 0.1} do
    local v = ms.meta.value{objective = P.obj, w0 = P.w0, optimizer = ms.optim.gd{lr = eta}, steps = T_MAIN,
      meta = "log", method = "exact"}
    R.oracle_diff = math.max(R.oracle_diff, math.abs(v - oracle.G(P.sp, eta, T_MAIN)))
  end
  local r = cached_run(ms, R, T_MAIN, ETA_HARD)
  R.grad_diff = 0
  for k = 1, R.KL do
    local ref = oracle.dG(P.sp, r.etas_long[k], T_MAIN)
    R.grad_diff = math.max(R.grad_diff, math.abs(r.grads[k] - ref) / math.max(math.abs(ref), 1e-3))
  end
  -- The float32 emulation against metastep's double reverse mode where both are finite.
  local eta = 0.02
  local _, g32 = tf32_value_and_grad(R.Hrows, R.w0t, eta, T_MAIN)
  local g64 = ms.meta.value_and_grad{objective = P.obj, w0 = P.w0, optimizer = ms.optim.gd{lr = eta},
    steps = T_MAIN, meta = "log", method = "reverse"}.grad.lr
  R.f32_check = {eta = eta, g32 = g32, g64 = g64, rel = math.abs(g32 - g64) / math.abs(g64)}
end

-- Grid optima of G for every horizon used.
local function measure_optima(R, S)
  local allT, seen = {}, {}
  for _, list in ipairs{{T_MAIN}, S.Ts, S.cmp_Ts} do
    for _, T in ipairs(list) do if not seen[T] then seen[T] = true; allT[#allT + 1] = T end end
  end
  table.sort(allT)
  R.allT, R.opt, R.optG, R.at_edge = allT, {}, {}, {}
  for _, T in ipairs(allT) do R.opt[T], R.optG[T], R.at_edge[T] = oracle.grid_optimum(R.sp, T, S.grid) end
end

-- Learned eta*(T) from eta0 = 0.1 for every T.
local function measure_by_T(ms, cfg, R, S)
  R.byT = {}
  for _, T in ipairs(S.Ts) do
    local r = cached_run(ms, R, T, ETA_HARD)
    R.byT[#R.byT + 1] = {T = T, eta = r.final, eta_long = r.final_long, opt = R.opt[T], rel = r.rel,
      rel_long = r.rel_long, gap = math.abs(R.opt[T] - R.eta_lim) / R.eta_lim, nonok = r.nonok, dyn = r.dyn}
    cfg.progress("exp3: learned eta*(T=%d) = %.6g (grid optimum %.6g) (%.1f s)", T, r.final, R.opt[T],
      os.clock() - R.clock0)
  end
end

-- Random quadratics at T = 80 from eta0 = 0.1: draw 0 is the quadratic of the other sections;
-- draws below S.draws run KL meta-steps (the robustness table), the others the paper's K.
local function measure_draws(ms, cfg, R, S)
  local main = cached_run(ms, R, T_MAIN, ETA_HARD)
  R.draws = {{j = 0, lmin = R.lmin, lmax = R.lmax, opt = R.opt[T_MAIN], rel = main.rel, rel_long = main.tail_long,
    tail = main.tail, dyn = main.dyn}}
  local n = math.max(S.draws, S.claim_draws)
  local meter = report.meter(cfg.progress, "exp3: random quadratics", n)
  for j = 1, n - 1 do
    local Q = make_problem(ms, cfg.seed, j)
    local o = oracle.grid_optimum(Q.sp, T_MAIN, S.grid)
    local steps = j < S.draws and R.KL or R.K
    local etas = etas_of(train(ms, Q, T_MAIN, ETA_HARD, steps), steps)
    R.draws[#R.draws + 1] = {j = j, lmin = Q.lmin, lmax = Q.lmax, opt = o, rel = relerr(etas[R.K + 1], o),
      tail = tail_max(head(etas, R.K), o), rel_long = j < S.draws and tail_max(etas, o) or nil,
      dyn = dynamics(etas, o, R.K)}
    meter:step(j + 1)
  end
end

-- The loops compared at each T of S.cmp_Ts. Plot order picks gnuplot's colours: the two headline
-- runs first; the dashed double TF run last, so it stays visible where it coincides with another
-- stuck run.
local VARIANTS = {
  {key = "G_stable", label = "G (log), stable meta-gradient [metastep]"},
  {key = "TF32", label = "G (log), plain backprop, float32 (TF emulation)"},
  {key = "F_clip", label = "F (naive), TF safety net", dash = true,
   extra = {meta = "naive", on_failure = "zero", clip = TF_CLIP}},
  {key = "F_stable", label = "F (naive), non-finite steps skipped",
   extra = {meta = "naive"}},
  {key = "TF64", label = "G (log), plain backprop, double, TF safety net", dash = true,
   extra = {method = "reverse", on_failure = "zero", clip = TF_CLIP}},
}

-- What goes wrong without the log (F) and without stable numerics (the TF loop):
-- R.cmp[T][key] = {etas, final, rel, nonok, ninf, settle, dyn}.
local function measure_compare(ms, cfg, R, S)
  R.cmp = {}
  for _, T in ipairs(S.cmp_Ts) do
    R.cmp[T] = {}
    for _, v in ipairs(VARIANTS) do
      local etas, nonok
      local ninf = 0
      if v.key == "G_stable" then
        local r = cached_run(ms, R, T, ETA_HARD)
        etas, nonok = r.etas, r.nonok
      elseif v.key == "TF32" then
        if T == T_MAIN then etas, nonok = train_tf32(R.Hrows, R.w0t, ETA_HARD, T, R.K) end
      else
        local grads
        etas, grads = etas_of(train(ms, R.P, T, ETA_HARD, R.K, v.extra), R.K)
        nonok, ninf = count_nonfinite(grads)
      end
      if etas then
        local opt = R.opt[T]
        R.cmp[T][v.key] = {etas = etas, final = etas[#etas], rel = relerr(etas[#etas], opt), nonok = nonok,
          settle = settle_k(etas, opt), ninf = ninf, dyn = dynamics(etas, opt, R.K)}
      end
    end
    cfg.progress("exp3: comparison at T=%d done (%.1f s)", T, os.clock() - R.clock0)
  end
end

--- Runs meta-GD on the paper's quadratic from every eta0, for every T, on random quadratics,
-- and the comparison loops; returns the trajectories and the optima of G.
function M.measure(cfg, ms)
  local S = SETTINGS[cfg.mode] or SETTINGS.default
  local P = make_problem(ms, cfg.seed, 0)
  local R = {S = S, K = S.iterations, KL = S.iterations * S.long, clock0 = os.clock(), seed = cfg.seed, P = P,
             sp = P.sp, lmin = P.lmin, lmax = P.lmax, eta_lim = 2 / (P.lmin + P.lmax), cache = {}}
  R.Hrows, R.w0t = float32_problem(P)
  measure_optima(R, S)
  cfg.progress("exp3: lambda in [%.4g, %.4g], 2/(lmin+lmax) = %.5g, grid optimum at T=%d: %.6g",
    R.lmin, R.lmax, R.eta_lim, T_MAIN, R.opt[T_MAIN])
  R.main = {}
  for _, eta0 in ipairs(S.eta0s) do R.main[#R.main + 1] = cached_run(ms, R, T_MAIN, eta0) end
  measure_checks(ms, R)
  cfg.progress("exp3: meta-GD on G at T=%d from %d starting points done (%.1f s)", T_MAIN, #S.eta0s,
    os.clock() - R.clock0)
  measure_by_T(ms, cfg, R, S)
  measure_draws(ms, cfg, R, S)
  measure_compare(ms, cfg, R, S)
  return R
end

-- ---------------------------------------------------------------- write

local BUDGET_LABEL = "K = %d"

-- eta_k and G(eta_k) per eta0 at T = 80: exp3_eta_k.csv and three figures.
local function write_eta_k(R, out, ms)
  local opt, optG = R.opt[T_MAIN], R.optG[T_MAIN]
  local series, series_rel, gseries, rows = {}, {}, {}, {}
  for _, m in ipairs(R.main) do
    local ks, rel, ex = {}, {}, {}
    for k, e in ipairs(m.etas_long) do
      local G = oracle.G(R.sp, e, T_MAIN)
      ks[k], rel[k], ex[k] = k, relerr(e, opt), G - optG
      rows[#rows + 1] = {m.eta0, k, e, G, ex[k], rel[k]}
    end
    local label = "η_0 = " .. report.fmt(m.eta0)
    -- lines with a few markers (spread and offset per curve by plot.figure), so curves that
    -- coincide after a few meta-steps stay visible, in grey scale too
    series[#series + 1] = {x = ks, y = m.etas_long, label = label}
    series_rel[#series_rel + 1] = {x = ks, y = rel, label = label}
    gseries[#gseries + 1] = {x = ks, y = ex, label = label}
  end
  local budget = {{x = R.K + 1, label = BUDGET_LABEL:format(R.K)}}
  report.csv(ms, out, "exp3_eta_k.csv", {"eta0", "k", "eta_k", "G_eta_k", "G_minus_Gmin", "rel_err_eta"}, rows)
  report.figure(ms, out, {file = "exp3_eta_k.png",
    title = ("Meta-GD on G = log f(w_T)/T, T = %d, meta step 1/(100√k)"):format(T_MAIN),
    xlabel = "meta-iteration k (log scale)", ylabel = "step size η_k", logx = true,
    xrange = {1, R.KL + 1}, series = series, vlines = budget,
    hlines = {{y = opt, label = ("grid optimum η = %.5g"):format(opt)}}})
  report.figure(ms, out, {file = "exp3_eta_relerr.png",
    title = ("Distance of η_k to the grid optimum of G, T = %d"):format(T_MAIN),
    xlabel = "meta-iteration k (log scale)", ylabel = "|η_k − η_{opt}| / η_{opt} (log scale)",
    logx = true, logy = true, xrange = {1, R.KL + 1}, series = series_rel, vlines = budget,
    hlines = {{y = TOL, label = "1%"}}})
  report.figure(ms, out, {file = "exp3_G_k.png",
    title = ("Meta-objective along meta-GD, T = %d (min G = %.5g)"):format(T_MAIN, optG),
    xlabel = "meta-iteration k (log scale)", ylabel = "G(η_k) − min G (log scale)",
    logx = true, logy = true, xrange = {1, R.KL + 1}, series = gseries, vlines = budget})
end

-- eta*(T) against T: exp3_eta_vs_T.csv and its figure.
local function write_eta_vs_T(R, out, ms)
  local Ts, learned, learned_long, grid, rows = {}, {}, {}, {}, {}
  for i, r in ipairs(R.byT) do
    Ts[i], learned[i], learned_long[i], grid[i] = r.T, r.eta, r.eta_long, r.opt
    rows[i] = {r.T, r.eta, r.rel, r.eta_long, r.rel_long, r.opt, R.eta_lim, 2 / R.lmax, r.gap, r.nonok}
  end
  report.csv(ms, out, "exp3_eta_vs_T.csv",
    {"T", "eta_learned", "rel_err", "eta_learned_long", "rel_err_long", "eta_grid_opt",
     "two_over_lmin_plus_lmax", "two_over_lmax", "rel_gap_grid_to_limit", "nonok_meta_grads"}, rows)
  report.figure(ms, out, {file = "exp3_eta_vs_T.png",
    title = ("Learned step size against the horizon T (meta-GD from η_0 = %g)"):format(ETA_HARD),
    xlabel = "inner steps T (log scale)", ylabel = "step size η", logx = true,
    xrange = {Ts[1] / 1.3, Ts[#Ts] * 1.3},
    series = {
      {x = Ts, y = grid, label = "grid optimum of G", with = "lines", dash = true},
      {x = Ts, y = learned, label = ("learned η*(T), %d meta-steps"):format(R.K), with = "points"},
      {x = Ts, y = learned_long, label = ("learned η*(T), %d meta-steps"):format(R.KL), with = "points"},
    },
    hlines = {{y = R.eta_lim, label = ("2/(λmin+λmax) = %.5g"):format(R.eta_lim)}},
    key = "bottom right"})
end

-- The robustness table's draws (the first S.draws, run to KL meta-steps): exp3_draws.csv and figure.
local function write_draws(R, out, ms)
  local js, rel, rel_long, rows = {}, {}, {}, {}
  for i = 1, R.S.draws do
    local d = R.draws[i]
    js[i], rel[i], rel_long[i] = d.j, d.rel, d.rel_long
    rows[i] = {d.j, d.lmin, d.lmax, d.opt, d.rel, d.tail, d.rel_long}
  end
  local ylo = TOL
  for i = 1, #js do
    for _, v in ipairs{rel[i], rel_long[i]} do if v > 0 then ylo = math.min(ylo, v) end end
  end
  report.csv(ms, out, "exp3_draws.csv",
    {"draw", "lambda_min", "lambda_max", "eta_grid_opt", "rel_err_final", "rel_err_max_last_tenth",
     "rel_err_max_last_tenth_long"}, rows)
  report.figure(ms, out, {file = "exp3_draws.png",
    title = ("Meta-GD on G from η_0 = %g at T = %d on %d random quadratics"):format(ETA_HARD, T_MAIN, #js),
    xlabel = "draw of (X, w_0)", ylabel = "|η − η_{opt}| / η_{opt} (log scale)", logy = true,
    xrange = {-1, #js},
    series = {
      {x = js, y = rel, label = ("final η after %d meta-steps"):format(R.K), with = "points"},
      {x = js, y = rel_long, label = ("worst η over meta-steps %d–%d"):format(R.KL - R.KL // 10 + 1, R.KL + 1),
       with = "points"},
    },
    yrange = {ylo / 10, 1e2}, hlines = {{y = TOL, label = "1%"}}, key = "top right"})
end

-- The Figure-1 claim over all draws: exp3_claim.csv and a scatter of settling step vs share.
local function write_claim(R, out, ms)
  local rows, xs, ys = {}, {}, {}
  for i, d in ipairs(R.draws) do
    rows[i] = {d.j, d.lmin, d.lmax, d.opt, d.dyn.settle or "", d.dyn.settled and 1 or 0, d.dyn.share, d.rel}
    xs[i], ys[i] = d.dyn.settle or R.K + 1, d.dyn.share
  end
  report.csv(ms, out, "exp3_claim.csv",
    {"draw", "lambda_min", "lambda_max", "eta_grid_opt", "settles_at_k", "settled_by_300",
     "share_300_1000_within_1pct", "rel_err_final"}, rows)
  report.figure(ms, out, {file = "exp3_claim.png",
    title = ("Figure-1 claim on %d random quadratics (T = %d, η_0 = %g, %d meta-steps)"):format(
      #R.draws, T_MAIN, ETA_HARD, R.K),
    xlabel = ("meta-step from which η_k stays within 1%% (log scale; never: %d)"):format(R.K + 1),
    ylabel = ("share of meta-steps k ∈ [%d, %d] within 1%%"):format(K_CLAIM, R.K), logx = true,
    xrange = {1, R.K * 2}, yrange = {-0.05, 1.05},
    series = {{x = xs, y = ys, label = "one random quadratic", with = "points"}},
    vlines = {{x = K_CLAIM, label = ("k = %d"):format(K_CLAIM)}},
    hlines = {{y = SHARE_MIN, label = ("%d%%"):format(pc(SHARE_MIN))}}, key = "bottom left"})
end

-- The rows of the comparison table: which loops end within 1% after the paper's meta-steps.
local function compare_table_rows(R)
  local rows = {}
  for _, T in ipairs(R.S.cmp_Ts) do
    for _, v in ipairs(VARIANTS) do
      local c = R.cmp[T][v.key]
      if c then
        rows[#rows + 1] = {T, v.label, report.fmt(c.final, 6), report.pct(c.rel), c.rel <= TOL and "yes" or "**no**",
          c.settle and tostring(c.settle) or "—", c.nonok}
      end
    end
  end
  return rows
end

-- One comparison figure per T, and exp3_compare.csv / exp3_compare_table.csv.
local function write_compare(R, out, ms)
  local FLOOR = 1e-3
  local rows = {}
  for _, T in ipairs(R.S.cmp_Ts) do
    local series = {}
    for _, v in ipairs(VARIANTS) do
      local c = R.cmp[T][v.key]
      if c then
        local ks, ys = {}, {}
        for k = 1, #c.etas do
          ks[k], ys[k] = k, math.max(c.etas[k], FLOOR)
          rows[#rows + 1] = {T, v.key, k, c.etas[k]}
        end
        series[#series + 1] = {x = ks, y = ys, label = v.label, with = "lines", dash = v.dash}
      else -- keeps every loop in the same colour in every figure
        series[#series + 1] = {x = {}, y = {}, label = v.label .. (" (T = %d only)"):format(T_MAIN), with = "lines"}
      end
    end
    local ymax = 1
    for _, se in ipairs(series) do for _, y in ipairs(se.y) do ymax = math.max(ymax, y) end end
    report.figure(ms, out, {file = ("exp3_compare_T%d.png"):format(T),
      title = ("Meta-GD from η_0 = %g at T = %d: log vs naive objective, stable vs plain " ..
        "back-prop"):format(ETA_HARD, T),
      xlabel = "meta-iteration k (log scale)", ylabel = "step size η_k (log scale; η = 0 drawn at 10^{-3})",
      logx = true, logy = true, xrange = {1, R.K + 1}, yrange = {FLOOR / 2, ymax * 1e4}, series = series,
      size = {1000, 650}, key = "top right",
      hlines = {{y = R.opt[T], label = ("grid optimum %.5g"):format(R.opt[T])}}})
  end
  report.csv(ms, out, "exp3_compare.csv", {"T", "variant", "k", "eta_k"}, rows)
  report.csv(ms, out, "exp3_compare_table.csv",
    {"T", "variant", "final_eta", "rel_err", "within_1pct", "settles_at_k", "nonfinite_meta_grads"},
    compare_table_rows(R))
end

-- The dynamics of every stable and comparison run: exp3_dynamics.csv.
local function write_dynamics(R, out, ms)
  local rows = {}
  for _, m in ipairs(R.main) do
    rows[#rows + 1] = {"eta0", T_MAIN, m.eta0, "G_stable", m.dyn.settle or "", m.dyn.share}
  end
  for _, r in ipairs(R.byT) do rows[#rows + 1] = {"T", r.T, ETA_HARD, "G_stable", r.dyn.settle or "", r.dyn.share} end
  for _, T in ipairs(R.S.cmp_Ts) do
    for _, v in ipairs(VARIANTS) do
      local c = R.cmp[T][v.key]
      if c then rows[#rows + 1] = {"compare", T, ETA_HARD, v.key, c.dyn.settle or "", c.dyn.share} end
    end
  end
  report.csv(ms, out, "exp3_dynamics.csv",
    {"section", "T", "eta0", "loop", "settles_at_k", "share_300_1000_within_1pct"}, rows)
end

--- Writes the CSV files and figures of experiment 3.
function M.write(R, cfg, ms)
  for _, write in ipairs{write_eta_k, write_eta_vs_T, write_draws, write_claim, write_compare, write_dynamics} do
    write(R, cfg.out, ms)
  end
end

-- ---------------------------------------------------------------- describe

local function median(xs)
  local s = {}
  for i, x in ipairs(xs) do s[i] = x end
  table.sort(s)
  local n = #s
  if n == 0 then return 0 / 0 end
  return n % 2 == 1 and s[(n + 1) // 2] or (s[n // 2] + s[n // 2 + 1]) / 2
end

-- The Figure-1 claim over the draws: how many settle by K_CLAIM, the mean and median share of
-- meta-steps in [K_CLAIM, K] within 1%, how many reach SHARE_MIN, and the settling steps.
local function claim_summary(R)
  local shares, settles = {}, {}
  local c = {n = #R.draws, settled = 0, full = 0, never = 0, mean = 0}
  for i, d in ipairs(R.draws) do
    shares[i] = d.dyn.share
    c.mean = c.mean + d.dyn.share / c.n
    if d.dyn.settled then c.settled = c.settled + 1 end
    if d.dyn.share >= SHARE_MIN then c.full = c.full + 1 end
    if d.dyn.settle then settles[#settles + 1] = d.dyn.settle else c.never = c.never + 1 end
  end
  c.median, c.median_settle = median(shares), median(settles)
  c.settled_frac = c.settled / c.n
  return c
end

local function share_parts(list, label)
  local parts = {}
  for _, x in ipairs(list) do parts[#parts + 1] = ("%s: %s"):format(label(x), report.pct(x.dyn.share)) end
  return table.concat(parts, "; ")
end

-- The paper's Figure-1 claim judged over the random quadratics.
local function claim_criteria(R)
  local c = claim_summary(R)
  return {report.criterion(
    ("Figure 1 over %d random quadratics (T = %d, η_0 = %g, meta step 1/(100√k)): on at least %d%% of them η_k " ..
     "stays within 1%% of the grid optimum of G from some meta-step k ≤ %d up to %d"):format(c.n, T_MAIN, ETA_HARD,
      pc(SETTLED_MIN), K_CLAIM, R.K + 1),
    ("%d of %d (%s); median settling step %s, never settled by %d: %d"):format(c.settled, c.n,
      report.pct(c.settled_frac), report.fmt(c.median_settle), R.K + 1, c.never),
    c.settled_frac >= SETTLED_MIN),
  report.criterion(
    ("Figure 1 over the same %d quadratics: on average at least %d%% of the meta-steps k ∈ [%d, %d] have η_k " ..
     "within 1%% of the grid optimum"):format(c.n, pc(SHARE_MIN), K_CLAIM, R.K),
    ("mean %s, median %s; %d of %d draws reach %d%%"):format(report.pct(c.mean), report.pct(c.median), c.full, c.n,
      pc(SHARE_MIN)),
    c.mean >= SHARE_MIN)}
end

-- The same dynamics on the paper's quadratic, from every eta0 and for every horizon.
local function run_criteria(R)
  local S = R.S
  return {report.criterion(
    ("From every η_0 in {%s} at T = %d (the paper's quadratic), at least %d%% of the meta-steps k ∈ [%d, %d] have " ..
     "η_k within 1%% of the grid optimum"):format(table.concat(S.eta0s, ", "), T_MAIN,
      pc(SHARE_MIN), K_CLAIM, R.K),
    share_parts(R.main, function(m) return ("η_0=%g"):format(m.eta0) end),
    report.count(R.main, function(m) return m.dyn.share >= SHARE_MIN end) == #R.main),
  report.criterion(
    ("For every T in {%s}, meta-GD from η_0 = %g has at least %d%% of the meta-steps k ∈ [%d, %d] within 1%% of " ..
     "the grid optimum of G(·, T)"):format(table.concat(S.Ts, ", "), ETA_HARD, pc(SHARE_MIN),
      K_CLAIM, R.K),
    share_parts(R.byT, function(r) return ("T=%d"):format(r.T) end),
    report.count(R.byT, function(r) return r.dyn.share >= SHARE_MIN end) == #R.byT)}
end

-- The grid optimum of G approaches 2/(lmin + lmax) as T grows.
local function limit_criterion(R)
  local mono, parts = true, {}
  for i, r in ipairs(R.byT) do
    if i > 1 and r.gap > R.byT[i - 1].gap then mono = false end
    parts[#parts + 1] = ("T=%d: %s"):format(r.T, report.pct(r.gap))
  end
  local first, last = R.byT[1], R.byT[#R.byT]
  return report.criterion(
    ("The grid optimum of G moves toward 2/(λmin+λmax) = %.5g as T grows: its relative gap is " ..
     "non-increasing over T ∈ {%s} and shrinks at least 4-fold from T = %d to T = %d (a 1/T approach would " ..
     "give %d-fold)"):format(R.eta_lim, table.concat(R.S.Ts, ", "), first.T, last.T, last.T // first.T),
    table.concat(parts, "; "), mono and last.gap <= first.gap / 4)
end

-- Without the log (F) the loop fails; without stable numerics (the TF loop) it fails where the stable
-- loop does not.
local function failure_criteria(R)
  local S, list = R.S, {}
  do
    local c1, c2 = R.cmp[T_MAIN].F_stable, R.cmp[T_MAIN].F_clip
    list[#list + 1] = report.criterion(
      ("Without the log: meta-GD on F = f(w_T) from η_0 = %g at T = %d has at most %d%% of the meta-steps " ..
       "k ∈ [%d, %d] within 1%% of the optimum, both when non-finite meta-gradients are skipped and with the " ..
       "TensorFlow safety net"):format(ETA_HARD, T_MAIN, pc(SHARE_FAIL), K_CLAIM, R.K),
      ("skipped: %s (final η = %s, %d non-finite); safety net: %s (final η = %s, %d non-finite)"):format(
        report.pct(c1.dyn.share), report.fmt(c1.final), c1.nonok, report.pct(c2.dyn.share), report.fmt(c2.final),
        c2.nonok),
      c1.dyn.share <= SHARE_FAIL and c2.dyn.share <= SHARE_FAIL)
  end
  do
    local n, parts = 0, {}
    for _, T in ipairs(S.cmp_Ts) do
      local st = R.cmp[T].G_stable
      for _, key in ipairs{"TF64", "TF32"} do
        local loop = R.cmp[T][key]
        if loop then
          parts[#parts + 1] = ("T=%d %s: %s (stable: %s)"):format(T, key == "TF64" and "double" or "float32",
            report.pct(loop.dyn.share), report.pct(st.dyn.share))
          if loop.dyn.share <= SHARE_FAIL and st.dyn.share >= SHARE_MOST then n = n + 1 end
        end
      end
    end
    list[#list + 1] = report.criterion(
      ("Without stable numerics: in at least one setting (double for T ∈ {%s}, float32 emulation at T = %d; " ..
       "η_0 = %g) the TensorFlow-style loop on G (plain back-propagation, non-finite meta-gradients → 0, clip " ..
       "±1e4) has at most %d%% of the meta-steps k ∈ [%d, %d] within 1%% of the optimum while metastep's stable " ..
       "run has at least %d%%"):format(table.concat(S.cmp_Ts, ", "), T_MAIN, ETA_HARD,
        pc(SHARE_FAIL), K_CLAIM, R.K, pc(SHARE_MOST)),
      "share within 1%: " .. table.concat(parts, "; "), n > 0)
  end
  return list
end

local function criteria(R)
  local list = claim_criteria(R)
  for _, c in ipairs(run_criteria(R)) do list[#list + 1] = c end
  list[#list + 1] = limit_criterion(R)
  for _, c in ipairs(failure_criteria(R)) do list[#list + 1] = c end
  return list
end

-- log10 |F'(eta)| from the closed form.
local function log10_dF(sp, eta, T)
  return oracle.closed_form(sp, eta, T).log_abs_dF / math.log(10)
end

local function evidence_main(R)
  local list = {}
  list[#list + 1] = ("H = XᵀX, X 20×20 Gaussian (seed %d): λmin = %.4g, λmax = %.4g; 2/λmax = %.5g, " ..
    "2/(λmin+λmax) = %.5g. The grid optimum of G is %.6g at T = %d and %.6g at T = %d (%s %s 2/(λmin+λmax))."):format(
    R.seed, R.lmin, R.lmax, 2 / R.lmax, R.eta_lim, R.opt[T_MAIN], T_MAIN, R.byT[#R.byT].opt, R.byT[#R.byT].T,
    report.pct(R.byT[#R.byT].gap), R.byT[#R.byT].opt < R.eta_lim and "below" or "above")
  local p1, p2, nonfinite = {}, {}, 0
  for _, m in ipairs(R.main) do
    p1[#p1 + 1] = ("η_0 = %g: %.5g (%s; %s)"):format(m.eta0, m.final, report.pct(m.rel), report.pct(m.tail))
    p2[#p2 + 1] = ("η_0 = %g: %.5g (%s; %s; from k = %s)"):format(m.eta0, m.final_long, report.pct(m.rel_long),
      report.pct(m.tail_long), m.settle_long and tostring(m.settle_long) or "never")
    nonfinite = nonfinite + m.nonok_long
  end
  list[#list + 1] = ("T = %d, grid optimum %.6g. Learned η after the paper's %d meta-steps (off the " ..
    "optimum; worst of the last tenth): %s."):format(T_MAIN, R.opt[T_MAIN], R.K, table.concat(p1, "; "))
  list[#list + 1] = ("The same runs continued to %d meta-steps (off the optimum; worst of the last tenth; " ..
    "within 1%% from meta-step k on): %s. Non-finite meta-gradients in all these runs: %d."):format(R.KL,
    table.concat(p2, "; "), nonfinite)
  list[#list + 1] = ("Checks: the closed-form G and ms.meta.value (method exact) agree to %.2g at 5 step " ..
    "sizes; metastep's stable G'(η_k) along the η_0 = %g run agrees with the closed form to %.2g (relative) at all " ..
    "%d visited η; the float32 back-propagation emulation agrees with metastep's double reverse mode on G'(%g) at " ..
    "T = %d to %.2g relative (%.6g vs %.6g)."):format(R.oracle_diff, ETA_HARD, R.grad_diff, R.KL, R.f32_check.eta,
    T_MAIN, R.f32_check.rel, R.f32_check.g32, R.f32_check.g64)
  return list
end

local function evidence_draws(R)
  local list = {}
  local table_draws = {}
  for i = 1, R.S.draws do table_draws[i] = R.draws[i] end
  local n = report.count(table_draws, function(d) return d.rel <= TOL end)
  local n_long = report.count(table_draws, function(d) return d.rel_long <= TOL end)
  local _, worst = report.range(table_draws, function(d) return d.rel_long end)
  list[#list + 1] = ("Over %d random quadratics at T = %d from η_0 = %g: %d end within 1%% after %d " ..
    "meta-steps; continued to %d meta-steps, %d stay within 1%% over the whole last tenth (worst draw: %s)."):format(
    #table_draws, T_MAIN, ETA_HARD, n, R.K, R.KL, n_long, report.pct(worst))
  local c = claim_summary(R)
  local n_final = report.count(R.draws, function(d) return d.rel <= TOL end)
  list[#list + 1] = ("The Figure-1 claim over %d random quadratics (T = %d, η_0 = %g, %d meta-steps): η_k stays " ..
    "within 1%% of the optimum from some k ≤ %d on for %d (%s), from some later k for %d, and never up to k = %d " ..
    "for %d; the share of meta-steps k ∈ [%d, %d] within 1%% is %s on average (median %s; %d draws reach %d%%). " ..
    "The final η alone, the number the paper's figure shows, is within 1%% for %d (%s); for a draw still " ..
    "saw-toothing at k = %d, whether it is depends on the phase of the saw-tooth."):format(c.n, T_MAIN,
    ETA_HARD, R.K, K_CLAIM, c.settled, report.pct(c.settled_frac), c.n - c.settled - c.never, R.K + 1, c.never,
    K_CLAIM, R.K, report.pct(c.mean), report.pct(c.median), c.full, pc(SHARE_MIN), n_final,
    report.pct(n_final / c.n), R.K + 1)
  return list
end

local function evidence_compare(R)
  local S, list = R.S, {}
  local parts = {}
  for _, T in ipairs(S.cmp_Ts) do
    local o = R.opt[T]
    parts[#parts + 1] = ("T = %d: 10^%.1f, 10^%.1f, 10^%.1f, 10^%.1f"):format(T, log10_dF(R.sp, o / 2, T),
      log10_dF(R.sp, o * 1.5, T), log10_dF(R.sp, 0, T), log10_dF(R.sp, ETA_HARD, T))
  end
  list[#list + 1] = ("|F'(η)| (closed form) at η = η_opt/2, 1.5·η_opt, 0 and %g: %s. F' is huge past " ..
    "2/λmax, and at η = 0 where every projected run lands, so meta-GD on F leaves the useful range in one " ..
    "step; on the convergent side (η_opt/2) F' shrinks with T, but slowly here, because modes with λ ≪ λmax " ..
    "keep f(w_T) from decaying fast."):format(ETA_HARD, table.concat(parts, "; "))
  local c = R.cmp[T_MAIN]
  list[#list + 1] = ("From η_0 = %g at T = %d: the stable log run ends at %.6g (%s off); F with skipped " ..
    "non-finite steps ends at %.4g (%d of %d meta-gradients non-finite); F with the safety net ends at %.4g " ..
    "(%d non-finite); the TF loop in double ends at %.6g (%s off, %d non-finite), in float32 at %.4g (%s off, " ..
    "%d of %d non-finite)."):format(ETA_HARD, T_MAIN, c.G_stable.final, report.pct(c.G_stable.rel), c.F_stable.final,
    c.F_stable.nonok, R.K, c.F_clip.final, c.F_clip.nonok, c.TF64.final, report.pct(c.TF64.rel), c.TF64.nonok,
    c.TF32.final, report.pct(c.TF32.rel), c.TF32.nonok, R.K)
  for _, T in ipairs(S.cmp_Ts) do
    if T ~= T_MAIN then
      local cc = R.cmp[T]
      list[#list + 1] = ("From η_0 = %g at T = %d: the stable log run ends at %.6g (%s off); the TF loop " ..
        "in double ends at %.4g (%s off, %d of %d meta-gradients non-finite); F (skip) at %.4g, F (safety net) " ..
        "at %.4g (%s off)."):format(ETA_HARD, T, cc.G_stable.final, report.pct(cc.G_stable.rel), cc.TF64.final,
        report.pct(cc.TF64.rel), cc.TF64.nonok, R.K, cc.F_stable.final, cc.F_clip.final, report.pct(cc.F_clip.rel))
    end
  end
  return list
end

local function figures(R)
  local lmax = R.lmax
  local list = {
    {file = "exp3_eta_k.png", data = "exp3_eta_k.csv",
     caption = ("η_k (the step size at the start of meta-iteration k; η_1 = η_0) for each η_0 at T = %d, " ..
       "continued to %d meta-steps; dotted: the grid optimum of G and the paper's budget. η_0 = 0.1 is past " ..
       "2/λmax = %.4g (GD diverges there)."):format(T_MAIN, R.KL, 2 / lmax)},
    {file = "exp3_eta_relerr.png", data = "exp3_eta_k.csv",
     caption = "Relative distance of η_k to the grid optimum of G; dotted: the 1% criterion and the paper's " ..
       "budget. The saw-tooth is meta-GD bouncing off the kink of G at its minimum (G' jumps from about −1 to " ..
       "about +2λmax/(ηλmax − 1) there); its amplitude shrinks with the meta step 1/(100√k)."},
    {file = "exp3_G_k.png", data = "exp3_eta_k.csv",
     caption = ("G(η_k) − min_η G(η), with G = log f(w_T)/T computed in closed form from the eigendecomposition " ..
       "of H; the grid minimum is G = %.6g at η = %.6g."):format(R.optG[T_MAIN], R.opt[T_MAIN])},
    {file = "exp3_eta_vs_T.png", data = "exp3_eta_vs_T.csv",
     caption = ("Learned η*(T) after the paper's %d and after %d meta-steps (points), the grid optimum of G for " ..
       "each T (dashed), and the large-T limit 2/(λmin+λmax) = %.5g (dotted; 2/λmax = %.5g is %.2f%% above it " ..
       "since λmin = %.3g is small)."):format(R.K, R.KL, R.eta_lim, 2 / lmax, 100 * (2 / lmax - R.eta_lim) / R.eta_lim,
       R.lmin)},
    {file = "exp3_draws.png", data = "exp3_draws.csv",
     caption = ("Relative distance to the grid optimum of G for independent draws of H = XᵀX and w_0 (draw 0 is " ..
       "the quadratic of the figures above): the final η of the paper's %d meta-steps, and the worst η over the " ..
       "last tenth of a run continued to %d meta-steps. A point at 100%% is a run at η = 0 (projection)."):format(
       R.K, R.KL)},
    {file = "exp3_claim.png", data = "exp3_claim.csv",
     caption = ("The Figure-1 claim on %d random quadratics: for each, the meta-step from which η_k stays within " ..
       "1%% " ..
       "of the grid optimum (drawn at %d when it does not by then) and the share of meta-steps k ∈ [%d, %d] within " ..
       "1%%. The claim holds on a draw in the top-left corner (settled by k = %d); dotted: k = %d and %d%%."):format(
       #R.draws, R.K + 1, K_CLAIM, R.K, K_CLAIM, K_CLAIM, pc(SHARE_MIN))},
  }
  for _, T in ipairs(R.S.cmp_Ts) do
    list[#list + 1] = {file = ("exp3_compare_T%d.png"):format(T), data = "exp3_compare.csv",
      caption = ("η_k from η_0 = %g at T = %d for the log objective with metastep's stable meta-gradient, the " ..
        "naive objective F (exact meta-gradient; non-finite meta-gradients skipped, or with the TF safety net), " ..
        "and the TensorFlow-style loop (plain back-propagation with the TF safety net)%s. TF safety net: " ..
        "metastep's on_failure = \"zero\", clip = 1e4 (NaN → 0, ±inf → ±1e4, clipping at ±1e4); the float32 " ..
        "emulation replaces every non-finite value by 0 as the authors did. η_k = 0 (projection) is drawn at " ..
        "1e-3; a flat line is a run stuck on non-finite meta-gradients."):format(ETA_HARD, T,
        T == T_MAIN and ", in double and in a float32 emulation" or ", in double")}
  end
  return list
end

local function tables(R)
  local pct, fmt, K, KL = report.pct, report.fmt, R.K, R.KL
  local by_T, draws = {}, {}
  for i, r in ipairs(R.byT) do
    by_T[i] = {r.T, fmt(r.eta, 6), pct(r.rel), fmt(r.eta_long, 6), pct(r.rel_long), fmt(r.opt, 6), pct(r.gap)}
  end
  for i = 1, R.S.draws do
    local d = R.draws[i]
    draws[i] = {d.j, fmt(d.lmin, 3), fmt(d.lmax, 3), fmt(d.opt, 5), pct(d.rel), pct(d.tail), pct(d.rel_long)}
  end
  local c = claim_summary(R)
  return {
    {title = ("The Figure-1 claim over %d random quadratics (T = %d, η_0 = %g, %d meta-steps)"):format(
       c.n, T_MAIN, ETA_HARD, K), file = "exp3_claim.csv",
     markdown = report.md_table({"draws", ("settled within 1%% by k ≤ %d"):format(K_CLAIM),
       ("never settled by k = %d"):format(K + 1), ("mean share of k ∈ [%d, %d] within 1%%"):format(K_CLAIM, K),
       "median share", ("draws with share ≥ %d%%"):format(pc(SHARE_MIN))},
       {{c.n, ("%d (%s)"):format(c.settled, pct(c.settled_frac)), c.never, pct(c.mean), pct(c.median), c.full}})},
    {title = ("Learned step size per horizon (from η_0 = %g)"):format(ETA_HARD), file = "exp3_eta_vs_T.csv",
     markdown = report.md_table({"T", ("η*(T), %d steps"):format(K), "off grid optimum", ("η*(T), %d steps"):format(KL),
       "off grid optimum", "grid optimum", "optimum off 2/(λmin+λmax)"}, by_T)},
    {title = ("Random quadratics, T = %d, η_0 = %g"):format(T_MAIN, ETA_HARD), file = "exp3_draws.csv",
     markdown = report.md_table({"draw", "λmin", "λmax", "grid optimum", ("final η off, %d steps"):format(K),
       ("worst of last tenth, %d steps"):format(K), ("worst of last tenth, %d steps"):format(KL)}, draws)},
    {title = ("Meta-GD from η_0 = %g: which loops converge (%d meta-steps)"):format(ETA_HARD, K),
     file = "exp3_compare_table.csv",
     markdown = report.md_table({"T", "loop", "final η", "off grid optimum", "within 1%", "stays within 1% from k",
       "non-finite meta-gradients"}, compare_table_rows(R))},
  }
end

-- Why 1% takes long: the two slopes of G around its kink, and the jump back from eta = 0.
local function note_sawtooth(R)
  local left_slope = oracle.dG(R.sp, R.opt[T_MAIN] * 0.98, T_MAIN)
  local right_slope = 2 * R.lmax / (R.opt[T_MAIN] * R.lmax - 1)
  local dG0 = oracle.dG(R.sp, 0, T_MAIN) -- the same for every T
  return ("**Why 1%% can take longer than %d meta-steps.** For large T, G is nearly a maximum of two lines in " ..
    "log|1 − ηλ|: left of the optimum G' ≈ −2λ/(1 − ηλ) for the slow modes (%.3g just left of it here), right " ..
    "of it G' ≈ 2λmax/(ηλmax − 1) (about %.0f here), with a transition only ~1/(2Tλmax) wide. A meta step of " ..
    "0.01/√k · %.0f overshoots the optimum by far more than 1%% until k is large, so η_k climbs slowly from the " ..
    "left and is thrown back (to 0 when the throw is larger than η) each time it crosses the kink; the " ..
    "saw-tooth's amplitude scales with the meta step 1/(100√k). Where the final η of the paper's budget misses " ..
    "1%%, the continued run shows whether it is this slow approach. At η = 0, G'(0) = −2Σλ_i²c_i²/Σλ_ic_i² = " ..
    "%.3g for every T, so a run projected to 0 jumps back by 0.01·%.0f/√k; where that jump lands right of the " ..
    "kink (short horizons, whose optimum is smallest), η_k can alternate between 0 and a point past the " ..
    "optimum for hundreds of meta-steps. Runs from different η₀ merge once they are projected to η = 0 at the " ..
    "same meta-step, which is why their curves coincide after the first few dozen meta-steps. Because the η " ..
    "reached after exactly %d meta-steps depends on the phase of this saw-tooth (a perturbation of G' by 1e-12 " ..
    "moves it by percents), the criteria judge the dynamics instead: whether η_k stays within 1%% from some " ..
    "k ≤ %d on (the paper's Figure 1), and the share of meta-steps k ∈ [%d, %d] within 1%%, over many random " ..
    "quadratics. Thresholds: the claim is REPRODUCED on the draws when at least %d%% of them settle by k = %d and " ..
    "the mean share is at least %d%%; a loop \"fails\" when its share is at most %d%%, and a stable loop beats it " ..
    "when its own share is at least %d%%."):format(
    R.K, left_slope, right_slope, right_slope, dG0, -dG0, R.K, K_CLAIM, K_CLAIM, R.K,
    pc(SETTLED_MIN), K_CLAIM, pc(SHARE_MIN),
    pc(SHARE_FAIL), pc(SHARE_MOST))
end

-- Inner steps after which f(w_T) ~ |1 - eta lmax|^(2T) passes exp(logmax).
local function horizon(R, eta, logmax)
  return math.ceil(logmax / (2 * math.log(math.abs(1 - eta * R.lmax))))
end

-- The TensorFlow loop in double and float32, and why the stable runs need no clipping.
local function note_tf(R)
  local S, c80 = R.S, R.cmp[T_MAIN]
  local tf64_sentence = c80.TF64.nonok == 0 and
    ("In double the plain loop at T = %d met no non-finite meta-gradient and behaved like the stable one (it ended " ..
     "%s off, the stable run %s off: the difference is the phase of the saw-tooth)."):format(T_MAIN,
      report.pct(c80.TF64.rel), report.pct(c80.G_stable.rel)) or
    ("In double the plain loop at T = %d met %d non-finite meta-gradients and ended %s off (stable: %s)."):format(
      T_MAIN, c80.TF64.nonok, report.pct(c80.TF64.rel), report.pct(c80.G_stable.rel))
  local tf32_sentence = ("In float32 it met %d non-finite meta-gradients in %d meta-steps and ended %s off%s."):format(
    c80.TF32.nonok, R.K, report.pct(c80.TF32.rel), c80.TF32.rel > TOL and ", as the authors' loop failed" or "")
  local tf_long = {}
  for _, T in ipairs(S.cmp_Ts) do
    local c = R.cmp[T].TF64
    if T > T_MAIN and c.rel > TOL then tf_long[#tf_long + 1] = ("T = %d (%d non-finite)"):format(T, c.nonok) end
  end
  local tf_long_sentence = #tf_long > 0 and
    ("At %s the double loop failed the way the float32 one does: an η whose unroll overflows gets a zero " ..
     "meta-gradient and never moves again."):format(table.concat(tf_long, ", ")) or
    "The double loop did not fail at the longer horizons tested."
  local stable_nonfinite, stable_maxg = 0, 0
  for _, r in pairs(R.cache) do
    stable_nonfinite = stable_nonfinite + r.nonok_long
    for _, g in ipairs(r.grads) do if g == g then stable_maxg = math.max(stable_maxg, math.abs(g)) end end
  end
  local tf_max, tf_inf = 0, 0
  for _, T in ipairs(S.cmp_Ts) do tf_inf = tf_inf + R.cmp[T].TF64.ninf end
  for _, e in ipairs(c80.TF64.etas) do tf_max = math.max(tf_max, e) end
  local edge_note = ""
  for _, T in ipairs(R.allT) do
    if R.at_edge[T] then edge_note = edge_note .. (" The grid minimum at T = %d lies at the grid's edge."):format(T) end
  end
  return ("**The TensorFlow loop** is emulated twice: with metastep's reverse mode in double (method = \"reverse\", " ..
    "on_failure = \"zero\", clip = 1e4; %d of the non-finite meta-gradients it met were ±inf, the rest NaN, " ..
    "which becomes 0), and with a float32 back-propagation written in this script (every stored value rounded " ..
    "to single precision, dot products accumulated in double; non-finite meta-gradients → 0, then clipping at " ..
    "±1e4). At step size η, f(w_T) grows like |1 − ηλmax|^{2T}, which passes the largest double (1.8e308) for " ..
    "T > 709.8/(2 log|1 − ηλmax|) but the largest float32 (3.4e38) already for T > 88.7/(2 log|1 − ηλmax|): " ..
    "%d vs %d steps at η₀ = %g, and %d vs %d steps at η = %.3g, the largest step size the double TF run at " ..
    "T = %d visited. %s %s %s The stable G runs met %d non-finite meta-gradients and their largest |G'| was " ..
    "%.3g, so clipping at ±1e4 would never have acted.%s"):format(tf_inf,
    horizon(R, ETA_HARD, 709.78), horizon(R, ETA_HARD, 88.72), ETA_HARD, horizon(R, tf_max, 709.78),
    horizon(R, tf_max, 88.72), tf_max, T_MAIN, tf64_sentence, tf32_sentence, tf_long_sentence, stable_nonfinite,
    stable_maxg, edge_note)
end

--- The report section: claim, settings, evidence, criteria, figures, tables and notes.
function M.describe(R)
  local S = R.S
  local evidence = evidence_main(R)
  for _, list in ipairs{evidence_draws(R), evidence_compare(R)} do
    for _, e in ipairs(list) do evidence[#evidence + 1] = e end
  end
  return {
    claim = "Meta-gradient descent on the log meta-objective G(η) = log f(w_T)/T with meta step ∝ 1/√k " ..
      "converges to the optimal step size, also from a divergent start (η₀ = 0.1 at T = 80, within about 300 " ..
      "meta-steps in the paper's Figure 1), the optimum tends to 2/(λmin+λmax) for large T, and the same loop on " ..
      "the naive objective F, or with back-propagation whose non-finite meta-gradients are zeroed (the authors' " ..
      "TensorFlow code), does not converge.",
    settings = ("d = %d, H = XᵀX, w₀ ~ N(0, I); meta-GD with meta step 1/(100·√k) for the paper's %d meta-steps " ..
      "(continued to %d to tell slow convergence from none), η projected to [0, ∞); G' by metastep's stable " ..
      "method; η₀ ∈ {%s} at T = %d; η*(T) for T ∈ {%s}; %d random quadratics for the Figure-1 criteria (the first " ..
      "%d also continued to %d meta-steps); comparison loops at T ∈ {%s}; grid of %d step sizes on (0, 4/λmax] " ..
      "refined by golden section. The paper: one quadratic, T = 80, η₀ = 0.1, 1000 meta-steps; --full adds η₀ " ..
      "values, T up to 1280 and %d quadratics."):format(D, R.K, R.KL, table.concat(S.eta0s, ", "), T_MAIN,
      table.concat(S.Ts, ", "), #R.draws, S.draws, R.KL, table.concat(S.cmp_Ts, ", "), S.grid,
      SETTINGS.full.claim_draws),
    evidence = evidence,
    criteria = criteria(R),
    figures = figures(R),
    tables = tables(R),
    notes = note_sawtooth(R) .. "\n\n" .. note_tf(R),
  }
end

return M
