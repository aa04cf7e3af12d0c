--- Experiment 1: meta-gradient explosion/vanishing on a quadratic (paper, Part 1).
--
-- GD with step size eta on f(w) = 1/2 w^T H w. The naive meta-objective F(eta) = f(w_T) has
-- |F'(eta)| ~ exp(T * 2 log max_i |1 - eta lambda_i|): exponentially small for eta < 2/lambda_max,
-- exponentially large above. The log meta-objective G(eta) = log f(w_T) / T has a bounded G'.
-- F' itself overflows doubles, so everything is carried in log space: metastep's "stable"
-- method returns log|F'| (log_abs_grad.lr), and the reference is the plain-Lua closed form of
-- lib/oracle.lua on its own Jacobi eigendecomposition of H, so neither the figure nor the
-- verdict rests on the code under test alone.
local oracle = require "lib.oracle"
local problems = require "lib.problems"
local report = require "lib.report"

local M = {title = "Meta-gradient explosion/vanishing on a quadratic"}

-- eta as fractions of 2/lambda_max, on both sides of it.
local FRACS = {0.05, 0.25, 0.5, 0.75, 0.95, 1.05, 1.25, 1.5, 2.0}
local LOG10 = math.log(10)

-- Least squares fit y = a + r x + b log(x); returns r, b. The log(x) column absorbs the
-- polynomial factor T in F' = T f(w_T) G', so r is the exponential rate alone.
local function fit_rate(xs, ys)
  local n = #xs
  local mx, ml, my = 0, 0, 0
  for k = 1, n do mx, ml, my = mx + xs[k] / n, ml + math.log(xs[k]) / n, my + ys[k] / n end
  local sx = 0
  for k = 1, n do sx = math.max(sx, math.abs(xs[k] - mx)) end
  -- centred and scaled columns: u = (x - mx)/sx, v = log x - ml; normal equations 2x2.
  local suu, suv, svv, suy, svy = 0, 0, 0, 0, 0
  for k = 1, n do
    local u, v, y = (xs[k] - mx) / sx, math.log(xs[k]) - ml, ys[k] - my
    suu, suv, svv = suu + u * u, suv + u * v, svv + v * v
    suy, svy = suy + u * y, svy + v * y
  end
  local det = suu * svv - suv * suv
  local ru = (suy * svv - svy * suv) / det
  local b = (suu * svy - suv * suy) / det
  return ru / sx, b
end

-- The T grid: a few short horizons, then the last decade [Tmax/10, Tmax] in tenths and the
-- last half [Tmax/2, Tmax] in twentieths. Returns Ts and the indices where both start.
local function horizons(Tmax)
  local Ts = {}
  for _, T in ipairs{10, 20, 50, 100, 200, 500, 1000, 2000, 5000} do
    if T < Tmax / 10 then Ts[#Ts + 1] = T end
  end
  for k = 1, 10 do Ts[#Ts + 1] = math.tointeger(Tmax * k / 10) end
  for k = 11, 20 do Ts[#Ts + 1] = math.tointeger(Tmax * k / 20) end
  table.sort(Ts)
  local u, decade_from, fit_from = {}, nil, nil
  for _, T in ipairs(Ts) do if T ~= u[#u] then u[#u + 1] = T end end
  for k, T in ipairs(u) do
    if T == Tmax // 10 then decade_from = k end
    if T == Tmax // 2 then fit_from = k end
  end
  return u, decade_from, fit_from
end

-- One step size over every T: the stable method against the closed form.
local function measure_eta(ms, P, fr, Ts, fit_from, decade_from)
  local sp = P.sp
  local eta = fr * P.eta_crit
  local predicted = 2 * math.log(oracle.rho(sp, eta))
  local gbound = 0 -- |G'| <= max_i 2 lam_i / |1 - eta lam_i| for every T (a convex combination)
  for _, l in ipairs(sp.lam) do gbound = math.max(gbound, 2 * l / math.abs(1 - eta * l)) end
  local e = {eta = eta, fr = fr, rho = oracle.rho(sp, eta), predicted = predicted, gbound = gbound,
             points = {}, worst_logF = 0, worst_G = 0, worst_bound = 0, seconds = 0}
  local fx, fy = {}, {}
  for k, T in ipairs(Ts) do
    local opt = ms.optim.gd{lr = eta}
    local t0 = os.clock()
    local rn = ms.meta.value_and_grad{objective = P.obj, optimizer = opt, w0 = P.w0, steps = T,
                                      meta = "naive", method = "stable"}
    local rl = ms.meta.value_and_grad{objective = P.obj, optimizer = opt, w0 = P.w0, steps = T,
                                      meta = "log", method = "stable"}
    e.seconds = e.seconds + os.clock() - t0
    local ref = oracle.closed_form(sp, eta, T)
    local logF, dG = rn.log_abs_grad.lr, rl.grad.lr
    -- For meta = "naive" the value f(w_T) and F' themselves leave the double range (status
    -- "underflow"/"overflow"); log_abs_grad carries |F'| in log space and must stay finite.
    if logF ~= logF or math.abs(logF) == math.huge or rl.status ~= "ok" then
      error(("stable method failed at eta=%g T=%d: log|F'| = %s, G' status %s"):format(
        eta, T, tostring(logF), rl.status), 0)
    end
    e.worst_logF = math.max(e.worst_logF, math.abs(logF - ref.log_abs_dF) / math.max(1, math.abs(ref.log_abs_dF)))
    e.worst_G = math.max(e.worst_G, math.abs(dG - ref.dG) / math.abs(ref.dG))
    e.points[k] = {T = T, logF = logF, dG = dG, ref = ref, log_loss = rn.log_loss or ref.logf}
    if k >= fit_from then fx[#fx + 1], fy[#fy + 1] = T, logF end
    e.worst_bound = math.max(e.worst_bound, math.abs(dG) / gbound)
    if math.abs(dG) > gbound * (1 + 1e-9) then e.bound_broken = true end
  end
  e.fitted, e.logT_coef = fit_rate(fx, fy)
  local dev = math.abs(e.fitted - predicted)
  e.rel_dev = dev / math.abs(predicted)
  e.rate_ok = e.rel_dev <= 0.02 or dev <= 1e-4
  e.sign_ok = (fr < 1 and e.fitted < 0) or (fr > 1 and e.fitted > 0)
  -- Over the last decade of T (Tmax/10 .. Tmax): how much |G'| and |F'| change.
  local gmin, gmax = math.huge, 0
  for k = decade_from, #Ts do
    local g = math.abs(e.points[k].dG)
    gmin, gmax = math.min(gmin, g), math.max(gmax, g)
  end
  e.settle = gmax / gmin
  local last = e.points[#Ts]
  e.absG_first, e.absG_last = math.abs(e.points[1].dG), math.abs(last.dG)
  e.log10F_last = last.logF / LOG10
  e.decades_F = math.abs(e.log10F_last - e.points[decade_from].logF / LOG10)
  return e
end

--- Measures log|F'| and G' by the stable method over a grid of (eta, T) and fits the rates.
function M.measure(cfg, ms)
  local H, problem = problems.quadratic(cfg, ms)
  local w0 = problems.start(cfg, ms)
  local sp = oracle.eigencoords(H, w0) -- the reference eigenbasis, computed by Jacobi
  local P = {obj = ms.objective.quadratic(H), w0 = w0, sp = sp, eta_crit = 2 / sp.lam[#sp.lam]}
  local Tmax = cfg.mode == "quick" and 10000 or 100000
  local Ts, decade_from, fit_from = horizons(Tmax)
  local R = {mode = cfg.mode, problem = problem, sp = sp, lmin = sp.lam[1], lmax = sp.lam[#sp.lam],
             eta_crit = P.eta_crit, Tmax = Tmax, Ts = Ts, etas = {}}
  for i, fr in ipairs(FRACS) do
    local e = measure_eta(ms, P, fr, Ts, fit_from, decade_from)
    R.etas[i] = e
    cfg.progress("exp1: eta = %.4g  rate %.6g (predicted %.6g), log10|F'(T=%d)| = %.6g, |G'| = %.4g",
      e.eta, e.fitted, e.predicted, Tmax, e.log10F_last, e.absG_last)
  end
  -- The predicted rate as a dense curve over eta.
  R.curve = {}
  for k = 0, 400 do
    local eta = 2.2 * R.eta_crit * k / 400
    R.curve[#R.curve + 1] = {eta, 2 * math.log(oracle.rho(sp, eta))}
  end
  return R
end

-- The columns of exp1_rates.csv for one eta.
local function rate_row(e)
  return {e.eta, e.fr, e.rho, e.predicted, e.fitted, e.rel_dev, e.logT_coef, e.absG_first, e.absG_last,
          e.gbound, e.log10F_last, e.decades_F}
end

--- Writes exp1_metagrad.csv, exp1_rates.csv, exp1_rate_curve.csv and the three figures.
function M.write(R, cfg, ms)
  local out = cfg.out
  local rows, rate_rows, series_F, series_G = {}, {}, {}, {}
  for i, e in ipairs(R.etas) do
    -- Each curve gets its own dash and point type from plot.figure (readable in grey scale);
    -- the label says which side of the threshold 2/lambda_max it is on.
    local label = ("η = %.3g (%.2f·2/λmax)"):format(e.eta, e.fr)
    local sF = {x = {}, y = {}, label = label}
    local sG = {x = {}, y = {}, label = label}
    for k, p in ipairs(e.points) do
      rows[#rows + 1] = {e.eta, e.fr, p.T, p.logF / LOG10, p.ref.log_abs_dF / LOG10, p.dG, p.ref.dG,
                         p.log_loss, p.ref.logf}
      sF.x[k], sF.y[k] = p.T, p.logF / LOG10
      sG.x[k], sG.y[k] = p.T, math.abs(p.dG)
    end
    rate_rows[i], series_F[i], series_G[i] = rate_row(e), sF, sG
  end
  report.csv(ms, out, "exp1_metagrad.csv",
    {"eta", "eta_over_2_lmax", "T", "log10_absF_prime_stable", "log10_absF_prime_closed",
     "G_prime_stable", "G_prime_closed", "log_f_T_stable", "log_f_T_closed"}, rows)
  report.csv(ms, out, "exp1_rates.csv",
    {"eta", "eta_over_2_lmax", "rho_max", "rate_predicted", "rate_fitted", "rel_dev", "logT_coef",
     "absG_prime_Tmin", "absG_prime_Tmax", "G_prime_bound", "log10_absF_prime_Tmax", "decades_F_last_decade"},
    rate_rows)
  report.csv(ms, out, "exp1_rate_curve.csv", {"eta", "rate_predicted"}, R.curve)
  report.figure(ms, out, {
    file = "exp1_naive.png",
    title = ("Naive meta-objective F(η) = f(w_T): log_{10}|F'(η)| (metastep stable method), 2/λ_{max} = %.4g"):format(
      R.eta_crit),
    -- log T: the small T where the curves cross the range of doubles are not squeezed into
    -- the first pixels
    xlabel = "unroll length T (steps, log scale)", ylabel = "log_{10} |F'(η)|", logx = true,
    series = series_F, size = {1000, 600},
    hlines = {{y = 308.25, label = "range of doubles: 10^{-308} to 10^{308}"}, {y = -307.65}},
  })
  report.figure(ms, out, {
    file = "exp1_log.png",
    title = "Log meta-objective G(η) = log f(w_T) / T: |G'(η)| stays bounded",
    xlabel = "unroll length T (steps, log scale)", ylabel = "|G'(η)| (log scale)",
    logx = true, logy = true, series = series_G, size = {1000, 600},
  })
  local cx, cy, px, py = {}, {}, {}, {}
  for k, c in ipairs(R.curve) do cx[k], cy[k] = c[1], c[2] end
  for k, e in ipairs(R.etas) do px[k], py[k] = e.eta, e.fitted end
  report.figure(ms, out, {
    file = "exp1_rates.png",
    title = "Exponential rate of |F'(η)| in T: fitted vs closed form 2 log max_i|1 − ηλ_i|",
    xlabel = "step size η", ylabel = "rate (d log|F'| / dT, per step)",
    series = {
      {x = cx, y = cy, label = "closed form 2 log max_i|1 − ηλ_i|", with = "lines"},
      {x = px, y = py, label = ("fitted on T ∈ [%d, %d] (stable method)"):format(R.Tmax // 2, R.Tmax), with = "points"},
    },
    vlines = {{x = R.eta_crit, label = "η = 2/λ_{max}"}},
    hlines = {{y = 0}},
    key = "left center",
  })
end

-- Worst values over the eta grid, and the rows the evidence quotes.
local function summarize(R)
  local s = {worst_logF = 0, worst_G = 0, worst_rate_dev = 0, worst_settle = 0, worst_bound = 0, seconds = 0,
             rate_ok = true, sign_ok = true, settle_ok = true, bound_ok = true, n_points = 0, n_outside = 0,
             signs = {}}
  s.lo, s.hi = R.etas[1], R.etas[1] -- smallest and largest log10|F'| at Tmax
  for _, e in ipairs(R.etas) do
    s.worst_logF, s.worst_G = math.max(s.worst_logF, e.worst_logF), math.max(s.worst_G, e.worst_G)
    s.worst_rate_dev = math.max(s.worst_rate_dev, math.min(e.rel_dev, 1e300))
    s.worst_settle, s.worst_bound = math.max(s.worst_settle, e.settle), math.max(s.worst_bound, e.worst_bound)
    s.seconds, s.n_points = s.seconds + e.seconds, s.n_points + #e.points
    s.rate_ok, s.sign_ok = s.rate_ok and e.rate_ok, s.sign_ok and e.sign_ok
    s.settle_ok, s.bound_ok = s.settle_ok and e.settle <= 2, s.bound_ok and not e.bound_broken
    s.signs[#s.signs + 1] = ("%s%.3g"):format(e.fitted < 0 and "−" or "+", e.eta)
    -- F' at Tmax outside the range of normal doubles
    if e.log10F_last > 308.25 or e.log10F_last < -307.65 then s.n_outside = s.n_outside + 1 end
    if e.log10F_last < s.lo.log10F_last then s.lo = e end
    if e.log10F_last > s.hi.log10F_last then s.hi = e end
    if e.fr < 1 then s.below = e elseif not s.above then s.above = e end
  end
  s.absG_min, s.absG_max = report.range(R.etas, function(e) return e.absG_last end)
  s.logT_min, s.logT_max = report.range(R.etas, function(e) return e.logT_coef end)
  return s
end

local function criteria(R, s)
  return {
    report.criterion("fitted rate within 2% (relative) or 1e-4 (absolute) of 2 log max_i\\|1 − ηλ_i\\|, for every η",
      ("worst relative deviation %.2e over %d η (table below)"):format(s.worst_rate_dev, #R.etas), s.rate_ok),
    report.criterion("fitted rate < 0 for every η < 2/λmax and > 0 for every η > 2/λmax",
      "signs by η: " .. table.concat(s.signs, ", "), s.sign_ok),
    report.criterion("\\|G'\\| bounded, not exponential in T: for every η, max/min of \\|G'\\| over T ∈ [Tmax/10, " ..
      "Tmax] ≤ 2",
      ("worst ratio %.4f"):format(s.worst_settle), s.settle_ok),
    report.criterion("\\|G'(η)\\| ≤ max_i 2λ_i/\\|1 − ηλ_i\\| (a T-independent bound) at every (η, T)",
      ("max of \\|G'\\|/bound %.4f"):format(s.worst_bound), s.bound_ok),
    report.criterion("stable method matches the closed form: relative error ≤ 1e-8 for log\\|F'\\| and for G' at " ..
      "every (η, T)",
      ("log\\|F'\\|: %.2e, G': %.2e"):format(s.worst_logF, s.worst_G), s.worst_logF <= 1e-8 and s.worst_G <= 1e-8),
  }
end

local function evidence(R, s)
  return {
    ("At T = %d, log₁₀|F'| ranges from %.6g (η = %.3g) to %.6g (η = %.3g): F' as a double would overflow " ..
     "or underflow (|log₁₀| > 308) for %d of the %d η, while |G'| stays between %.3g and %.3g."):format(
      R.Tmax, s.lo.log10F_last, s.lo.eta, s.hi.log10F_last, s.hi.eta, s.n_outside, #R.etas, s.absG_min, s.absG_max),
    ("Just below the threshold (η = %.4g) the fitted rate is %.6g per step (predicted %.6g), just above " ..
     "(η = %.4g) it is %.6g (predicted %.6g): over the last decade of T, |F'| moves by %.4g and %.4g " ..
     "orders of magnitude, |G'| by a factor of at most %.4f."):format(
      s.below.eta, s.below.fitted, s.below.predicted, s.above.eta, s.above.fitted, s.above.predicted,
      s.below.decades_F, s.above.decades_F, s.worst_settle),
    ("Largest deviation of a fitted rate from the closed form: %.2e (relative); the fitted coefficient of log T " ..
     "(the polynomial factor T in F' = T·f(w_T)·G') lies in [%.6f, %.6f]."):format(s.worst_rate_dev,
      s.logT_min, s.logT_max),
    ("metastep's stable method agrees with the independent closed form: max relative error of log|F'| %.2e, " ..
     "of G' %.2e over all %d (η, T) points (%.1f s of stable-method time)."):format(
      s.worst_logF, s.worst_G, s.n_points, s.seconds),
  }
end

local function rates_table(R)
  local rows = {}
  for i, e in ipairs(R.etas) do
    rows[i] = {("%.4g"):format(e.eta), ("%.2f"):format(e.fr), ("%.4f"):format(e.rho), ("%.6g"):format(e.predicted),
      ("%.6g"):format(e.fitted), ("%.1e"):format(e.rel_dev), ("%.4g"):format(e.absG_first),
      ("%.4g"):format(e.absG_last), ("%.6g"):format(e.log10F_last)}
  end
  return report.md_table({"η", "η·λmax/2", "max_i \\|1−ηλ_i\\|", "predicted rate", "fitted rate", "rel. dev.",
    "\\|G'\\| at T=" .. R.Ts[1], "\\|G'\\| at T=" .. R.Tmax, "log₁₀\\|F'\\| at T=" .. R.Tmax}, rows)
end

--- The report section: claim, settings, evidence, criteria, figures, table and notes.
function M.describe(R, cfg)
  local s = summarize(R)
  local fracs = {}
  for i, e in ipairs(R.etas) do fracs[i] = e.fr end
  return {
    claim = "For gradient descent on a quadratic, the naive meta-objective f(w_T) has a meta-gradient " ..
      "that vanishes exponentially in T for η < 2/λmax and explodes exponentially for η > 2/λmax, at the rate " ..
      "2 log max_i |1 − ηλ_i| per step, while the log meta-objective (1/T) log f(w_T) has a meta-gradient " ..
      "bounded independently of T.",
    settings = ("%s; λ ∈ [%.4g, %.4g] (computed here by Jacobi), 2/λmax = %.4g; w₀ ~ N(0, I); " ..
      "η = {%s}·2/λmax; T from %d to %d (%d values; the rate is fitted on the values in [%d, %d]). " ..
      "Meta-gradients by metastep's stable method (meta = \"naive\" and \"log\"); reference: the closed form " ..
      "in plain Lua. %s"):format(R.problem, R.lmin, R.lmax, R.eta_crit, table.concat(fracs, ", "),
      R.Ts[1], R.Tmax, #R.Ts, R.Tmax // 2, R.Tmax,
      cfg.mode == "full" and "" or "(--full uses the paper's H = XᵀX; --quick stops at T = 10⁴.)"),
    evidence = evidence(R, s),
    criteria = criteria(R, s),
    figures = {
      {file = "exp1_naive.png", data = "exp1_metagrad.csv",
       caption = "log₁₀|F'(η)| of the naive meta-objective against T: straight lines (exponential in T), " ..
         "falling for η < 2/λmax, rising for η > 2/λmax (dashed). Dotted: log₁₀ of the largest and smallest " ..
         "normal double, ±308."},
      {file = "exp1_log.png", data = "exp1_metagrad.csv",
       caption = "|G'(η)| of the log meta-objective against T for the same η: it settles to a T-independent value."},
      {file = "exp1_rates.png", data = "exp1_rates.csv",
       caption = "Fitted exponential rate of |F'| per η (points) and the closed form 2 log max_i|1 − ηλ_i| (curve; " ..
         "data exp1_rate_curve.csv); the sign changes at 2/λmax, the minimum is at 2/(λmin + λmax)."},
    },
    tables = {{title = "Fitted vs predicted exponential rate of |F'(η)|", file = "exp1_rates.csv",
               markdown = rates_table(R)}},
    notes = ("The rate is fitted as ln|F'| = a + r·T + b·ln T by least squares over T ∈ [%d, %d] (past the " ..
      "transients of the smaller |1 − ηλ_i|); the b·ln T term absorbs the factor T of F' = T·f(w_T)·G' " ..
      "(b ≈ 1), so r is the exponential rate alone. The closed-form reference uses eigenvalues and " ..
      "eigenvectors computed in plain Lua (cyclic Jacobi on H, lib/oracle.lua), not metastep's eigh. Values " ..
      "of F' are never formed as doubles: log|F'| comes from log_abs_grad.lr."):format(R.Tmax // 2, R.Tmax)
      .. (cfg.mode == "full" and " With H = XᵀX, λmin is small, so below 2/λmax the rates are close to 0: F' " ..
        "vanishes slowly, though still exponentially." or ""),
  }
end

return M
