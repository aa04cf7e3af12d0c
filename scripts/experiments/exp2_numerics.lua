--- Experiment 2: numerics of back-propagation through the unroll (paper, Part 1).
--
-- G(eta) = log f(w_T) / T has a moderate derivative, but computing it by differentiating the
-- unroll carries the iterates w_t, f(w_T) and the adjoint grad f(w_T) / (T f(w_T)), which are
-- exponentially large or small in T. Plain reverse mode and forward mode are compared with
-- metastep's stable method (and its eigenbasis closed form, "exact") against the plain-Lua
-- closed form of lib/oracle.lua (its own Jacobi eigendecomposition), over T up to 10^5 and a
-- grid of eta on both sides of 2/lambda_max, on the quadratic of experiment 1.
local oracle = require "lib.oracle"
local problems = require "lib.problems"
local report = require "lib.report"

local M = {title = "Numerics of back-propagation for the log meta-objective"}

local DBL_MIN = 2.2250738585072014e-308
local DBL_MAX = 1.7976931348623157e308
local TOL = 1e-6 -- a run that reports "ok" must be this accurate to count as correct
local METHODS = {"reverse", "forward", "stable", "exact"}
-- eta as fractions of 2/lambda_max across (0, 2.5 * 2/lambda_max) = (0, 0.5) for lambda_max = 10;
-- 1.0 is the measure-zero case |1 - eta lambda_max| = 1.
local FRACS = {0.005, 0.05, 0.15, 0.25, 0.5, 0.75, 0.95, 1.0, 1.05, 1.25, 1.5, 2.0, 2.45}
local FLOOR = 1e-17 -- an error of exactly 0 is drawn at this floor on the log axis

--- The first step t <= Tmax at which f(w_t) leaves the range of normal doubles according to the
-- closed form (the loss 1/2 x^T H x is summed as x^T H x, so overflow is at 2 f > DBL_MAX), and
-- which way; nil when it stays inside up to Tmax. log f(w_t) is convex in t (a logsumexp of
-- affine functions), so both searches are bisections.
function M.predicted_failure(sp, eta, Tmax)
  local lo_lim, hi_lim = math.log(DBL_MIN), math.log(DBL_MAX) - math.log(2)
  local function g(t) return oracle.log_f(sp, eta, t) end
  local best, kind
  -- Overflow: {t : g(t) <= hi_lim} is an interval containing t = 0.
  if g(Tmax) > hi_lim then
    local a, b = 0, Tmax -- g(a) <= hi_lim < g(b)
    while b - a > 1 do
      local m = (a + b) // 2
      if g(m) > hi_lim then b = m else a = m end
    end
    best, kind = b, "overflow"
  end
  -- Underflow: find the minimiser of g on [0, Tmax] (ternary search on integers), then the
  -- first t before it with g(t) < lo_lim.
  local a, b = 0, Tmax
  while b - a > 2 do
    local m1, m2 = a + (b - a) // 3, b - (b - a) // 3
    if g(m1) <= g(m2) then b = m2 else a = m1 end
  end
  local tmin = a
  for t = a + 1, b do if g(t) < g(tmin) then tmin = t end end
  if g(tmin) < lo_lim then
    local x, y = 0, tmin -- g(x) >= lo_lim > g(y)
    while y - x > 1 do
      local m = (x + y) // 2
      if g(m) < lo_lim then y = m else x = m end
    end
    if not best or y < best then best, kind = y, "underflow" end
  end
  return best, kind
end

-- One run of method m at (eta, T) against the closed-form G'; class is "ok", "error" (reported
-- ok but wrong by more than TOL) or the failing status.
local function measure_run(ms, P, m, eta, T, ref)
  local t0 = os.clock()
  local r = ms.meta.value_and_grad{objective = P.obj, optimizer = ms.optim.gd{lr = eta}, w0 = P.w0,
                                   steps = T, meta = "log", method = m}
  local dt = os.clock() - t0
  local g = r.grad.lr
  local err = math.abs(g - ref.dG) / math.abs(ref.dG)
  local class = r.status
  if class == "ok" and (err ~= err or err > TOL) then class = "error" end
  return {method = m, status = r.status, fail_step = r.fail_step, grad = g, ref = ref.dG, err = err, class = class,
          seconds = dt}
end

--- Runs every method at every (eta, T) of the grid; returns the results res[method][ie][iT].
function M.measure(cfg, ms)
  local H, problem = problems.quadratic(cfg, ms)
  local w0 = problems.start(cfg, ms)
  local sp = oracle.eigencoords(H, w0)
  local P = {obj = ms.objective.quadratic(H), w0 = w0}
  local Ts = cfg.mode == "quick" and {10, 100, 1000, 10000} or {10, 100, 1000, 10000, 100000}
  local R = {mode = cfg.mode, problem = problem .. " (the same quadratic as experiment 1)", sp = sp,
             lmin = sp.lam[1], lmax = sp.lam[#sp.lam], eta_crit = 2 / sp.lam[#sp.lam], Ts = Ts, Tmax = Ts[#Ts],
             fracs = FRACS, etas = {}, res = {}, min_ref = math.huge}
  for _, m in ipairs(METHODS) do R.res[m] = {} end
  for ie, fr in ipairs(FRACS) do
    local eta = fr * R.eta_crit
    R.etas[ie] = eta
    for _, m in ipairs(METHODS) do R.res[m][ie] = {} end
    for iT, T in ipairs(Ts) do
      local ref = oracle.closed_form(sp, eta, T)
      R.min_ref = math.min(R.min_ref, math.abs(ref.dG))
      for _, m in ipairs(METHODS) do R.res[m][ie][iT] = measure_run(ms, P, m, eta, T, ref) end
    end
    local p = {}
    for k, m in ipairs{"reverse", "forward"} do p[k] = R.res[m][ie][#Ts].class end
    cfg.progress("exp2: eta = %.4g done (reverse %s, forward %s at T = %d)", eta, p[1], p[2], R.Tmax)
  end
  R.predicted = {}
  for ie, eta in ipairs(R.etas) do R.predicted[ie] = {M.predicted_failure(sp, eta, R.Tmax)} end
  -- Predicted failure step as a dense curve over eta.
  R.curve = {}
  for k = 1, 500 do
    local eta = 2.5 * R.eta_crit * k / 500
    R.curve[k] = {eta, (M.predicted_failure(sp, eta, R.Tmax))}
  end
  return R
end

-- The first T of the grid at which method m fails at eta index ie, and that run.
local function first_failure(R, m, ie)
  for iT, T in ipairs(R.Ts) do
    local x = R.res[m][ie][iT]
    if x.class ~= "ok" then return T, x end
  end
end

-- Worst error over eta per (method, T); a failed run counts as error 1.
local function worst_by_T(R, m, iT)
  local w, nfail = 0, 0
  for ie = 1, #R.fracs do
    local x = R.res[m][ie][iT]
    if x.class == "ok" then w = math.max(w, x.err) else w, nfail = 1, nfail + 1 end
  end
  return w, nfail
end

local function write_runs(R, out, ms)
  local runs, err_rows = {}, {}
  for ie, fr in ipairs(R.fracs) do
    for iT, T in ipairs(R.Ts) do
      for _, m in ipairs(METHODS) do
        local x = R.res[m][ie][iT]
        runs[#runs + 1] = {m, R.etas[ie], fr, T, x.status, x.fail_step or "", x.grad, x.ref, x.err, x.class, x.seconds}
      end
    end
  end
  for _, m in ipairs(METHODS) do
    for iT, T in ipairs(R.Ts) do
      local w, nfail = worst_by_T(R, m, iT)
      err_rows[#err_rows + 1] = {m, T, w, nfail, #R.fracs}
    end
  end
  report.csv(ms, out, "exp2_runs.csv",
    {"method", "eta", "eta_over_2_lmax", "T", "status", "fail_step", "G_prime", "G_prime_closed",
     "rel_error", "class", "seconds"}, runs)
  report.csv(ms, out, "exp2_error.csv",
    {"method", "T", "worst_rel_error_failed_as_1", "failed_runs", "eta_values"}, err_rows)
end

local function write_failures(R, out, ms)
  local rows = {}
  for ie, fr in ipairs(R.fracs) do
    local row = {R.etas[ie], fr}
    for _, m in ipairs{"reverse", "forward", "stable"} do
      local T, x = first_failure(R, m, ie)
      if T then
        row[#row + 1], row[#row + 1], row[#row + 1] = T, x.class, x.fail_step or ""
      else
        row[#row + 1], row[#row + 1], row[#row + 1] = "", "ok", ""
      end
    end
    row[#row + 1], row[#row + 1] = R.predicted[ie][1] or "", R.predicted[ie][2] or ""
    rows[ie] = row
  end
  report.csv(ms, out, "exp2_failures.csv",
    {"eta", "eta_over_2_lmax", "reverse_first_fail_T", "reverse_kind", "reverse_step",
     "forward_first_fail_T", "forward_kind", "forward_step", "stable_first_fail_T", "stable_kind", "stable_step",
     "predicted_step", "predicted_kind"}, rows)
  local curve = {}
  for k, c in ipairs(R.curve) do curve[k] = {c[1], c[2] or ""} end
  report.csv(ms, out, "exp2_failstep_curve.csv", {"eta", "predicted_fail_step"}, curve)
end

local function error_figure(R, out, ms)
  local series = {}
  for _, m in ipairs(METHODS) do
    -- forward is dashed: it coincides with reverse wherever both fail.
    local s = {x = {}, y = {}, label = m, dash = m == "exact" or m == "forward"}
    for iT, T in ipairs(R.Ts) do s.x[iT], s.y[iT] = T, math.max(worst_by_T(R, m, iT), FLOOR) end
    series[#series + 1] = s
  end
  report.figure(ms, out, {
    file = "exp2_error.png",
    title = "Relative error of G'(η) for the log meta-objective, worst case over the η grid",
    xlabel = "unroll length T (steps, log scale)", ylabel = "worst relative error (log scale; failed run = 1)",
    logx = true, logy = true, series = series, yrange = {1e-18, 10},
    hlines = {{y = TOL, label = "1e-6"}}, key = "bottom right",
  })
end

local function failstep_figure(R, out, ms)
  local pts = {reverse = {x = {}, y = {}}, forward = {x = {}, y = {}}}
  local nofail = {x = {}, y = {}}
  for ie, eta in ipairs(R.etas) do
    for _, m in ipairs{"reverse", "forward"} do
      local T, x = first_failure(R, m, ie)
      if T and x.fail_step then
        pts[m].x[#pts[m].x + 1], pts[m].y[#pts[m].y + 1] = eta, x.fail_step
      elseif not T and m == "reverse" then
        nofail.x[#nofail.x + 1], nofail.y[#nofail.y + 1] = eta, R.Tmax
      end
    end
  end
  local px, py = {}, {}
  for k, c in ipairs(R.curve) do px[k], py[k] = c[1], c[2] or R.Tmax end
  report.figure(ms, out, {
    file = "exp2_failstep.png",
    title = "Step at which plain reverse/forward mode first fail (f(w_t) leaves the doubles)",
    xlabel = "step size η", ylabel = "step t of the first non-finite / underflowed value (log scale)",
    logy = true, yrange = {1, R.Tmax * 3},
    series = {
      {x = px, y = py, label = ("closed form: f(w_t) outside [10^{-308}, 10^{308}] (capped at T = %d)"):format(R.Tmax),
       with = "lines"},
      {x = pts.reverse.x, y = pts.reverse.y, label = "reverse mode: step where it stopped", with = "points"},
      {x = pts.forward.x, y = pts.forward.y, label = "forward mode: step where it stopped", with = "points"},
      {x = nofail.x, y = nofail.y, label = ("reverse/forward: no failure up to T = " ..
        "%d"):format(R.Tmax), with = "points"},
    },
    vlines = {{x = R.eta_crit, label = "2/λ_{max}"}}, key = "bottom center",
  })
end

--- Writes exp2_runs.csv, exp2_error.csv, exp2_failures.csv, exp2_failstep_curve.csv and two figures.
function M.write(R, cfg, ms)
  for _, write in ipairs{write_runs, write_failures, error_figure, failstep_figure} do write(R, cfg.out, ms) end
end

-- Totals over the grid the criteria and the evidence quote.
local function summarize(R)
  local s = {secs = {}, worst = {}, stable_worst = 0, stable_all_ok = true, dishonest = {},
             fails_big = {reverse = 0, forward = 0}, n_big = 0, ok_at_Tmax = {}, match_pred = 0, n_pred = 0,
             first_fail_big = {}}
  for _, m in ipairs(METHODS) do s.secs[m], s.worst[m] = 0, 0 end
  for _, T in ipairs(R.Ts) do if T >= 1000 then s.n_big = s.n_big + #R.fracs end end
  for ie, eta in ipairs(R.etas) do
    for iT, T in ipairs(R.Ts) do
      for _, m in ipairs(METHODS) do
        local x = R.res[m][ie][iT]
        s.secs[m] = s.secs[m] + x.seconds
        if x.status == "ok" then s.worst[m] = math.max(s.worst[m], x.err ~= x.err and math.huge or x.err) end
        if (m == "reverse" or m == "forward") and x.class == "error" then
          s.dishonest[#s.dishonest + 1] = ("%s at η=%.3g, T=%d: error %.2e"):format(m, eta, T, x.err)
        end
        if m == "stable" then
          if x.class ~= "ok" then s.stable_all_ok = false end
          s.stable_worst = math.max(s.stable_worst, x.err ~= x.err and math.huge or x.err)
        end
        if s.fails_big[m] and T >= 1000 and x.class ~= "ok" then s.fails_big[m] = s.fails_big[m] + 1 end
      end
    end
    if R.res.reverse[ie][#R.Ts].class == "ok" then s.ok_at_Tmax[#s.ok_at_Tmax + 1] = ("%.3g"):format(eta) end
    local pstep = R.predicted[ie][1]
    for _, m in ipairs{"reverse", "forward"} do
      local T, x = first_failure(R, m, ie)
      if T and T >= 1000 then s.first_fail_big[m] = true end
      if T and x.fail_step and pstep then
        s.n_pred = s.n_pred + 1
        if math.abs(x.fail_step - pstep) <= 1 then s.match_pred = s.match_pred + 1 end
      end
    end
  end
  -- The slowest single run of each method at Tmax that reported ok.
  s.slowest = {}
  for _, m in ipairs{"stable", "reverse", "forward"} do
    local best
    for ie = 1, #R.fracs do
      local x = R.res[m][ie][#R.Ts]
      if x.class == "ok" and (not best or x.seconds > best) then best = x.seconds end
    end
    s.slowest[#s.slowest + 1] = ("%s %s"):format(m, best and ("%.2f s"):format(best) or "n/a")
  end
  return s
end

local function failures_table(R)
  local rows = {}
  for ie, fr in ipairs(R.fracs) do
    local row = {("%.4g"):format(R.etas[ie]), ("%.3f"):format(fr)}
    for _, m in ipairs{"reverse", "forward", "stable"} do
      local T, x = first_failure(R, m, ie)
      row[#row + 1] = T and ("%d (%s%s)"):format(T, x.class, x.fail_step and (", step " .. x.fail_step) or
        (", error %.1e"):format(x.err)) or ("none up to %d"):format(R.Tmax)
    end
    local pstep, pkind = R.predicted[ie][1], R.predicted[ie][2]
    row[#row + 1] = pstep and ("%d (%s)"):format(pstep, pkind) or ("none up to %d"):format(R.Tmax)
    rows[ie] = row
  end
  return report.md_table({"η", "η·λmax/2", "reverse: first failing T (kind, step)",
    "forward: first failing T (kind, step)", "stable: first failing T",
    "closed form: f(w_t) leaves the doubles at step"}, rows)
end

local function criteria(s)
  return {
    report.criterion("stable: status ok and relative error ≤ 1e-8 at every (T, η)",
      ("worst %.2e%s"):format(s.stable_worst, s.stable_all_ok and "" or ", some runs not ok"),
      s.stable_all_ok and s.stable_worst <= 1e-8),
    report.criterion("plain reverse mode fails (status ≠ ok or error > 1e-6) at some (T, η) with T ≥ 1000",
      ("%d of %d runs"):format(s.fails_big.reverse, s.n_big), s.first_fail_big.reverse),
    report.criterion("plain forward mode fails (status ≠ ok or error > 1e-6) at some (T, η) with T ≥ 1000",
      ("%d of %d runs"):format(s.fails_big.forward, s.n_big), s.first_fail_big.forward),
    report.criterion("reverse and forward are honest: wherever they report ok, relative error ≤ 1e-6",
      #s.dishonest == 0 and ("worst %.2e / %.2e"):format(s.worst.reverse, s.worst.forward)
        or table.concat(s.dishonest, "; "), #s.dishonest == 0),
  }
end

local function evidence(R, s)
  local per_call = {}
  for _, m in ipairs(METHODS) do per_call[#per_call + 1] = ("%s %.1f s"):format(m, s.secs[m]) end
  return {
    ("Plain reverse and forward mode fail on %d and %d of the %d (η, T) runs with T ≥ 1000; at T = %d they " ..
     "return a number only for η ∈ {%s}."):format(s.fails_big.reverse, s.fails_big.forward, s.n_big, R.Tmax,
      table.concat(s.ok_at_Tmax, ", ")),
    ("%s: the worst error of reverse/forward over the runs they report as ok is %.2e / %.2e; their fail " ..
     "step matches the step where the closed-form f(w_t) leaves the normal doubles (±1 step) in %d of %d " ..
     "failing cases."):format(#s.dishonest == 0 and "No run reported ok with a wrong number" or
      (#s.dishonest .. " runs reported ok with an error above 1e-6"), s.worst.reverse, s.worst.forward,
      s.match_pred, s.n_pred),
    ("The stable method reports ok at all %d (η, T) points with worst relative error %.2e (exact: %.2e); " ..
     "the smallest |G'| in the grid is %.3g, so relative errors are well defined."):format(
      #R.fracs * #R.Ts, s.stable_worst, s.worst.exact, R.min_ref),
    ("Time per method over the whole grid: %s; slowest single run at T = %d that reported ok: %s."):format(
      table.concat(per_call, ", "), R.Tmax, table.concat(s.slowest, ", ")),
  }
end

-- What counts as a failure, and whether reverse/forward lost precision short of failing.
local function notes(s)
  return "metastep's reverse and forward modes stop the unroll at the first step whose loss is not a normal " ..
    "double (status underflow/overflow with fail_step) instead of back-propagating NaN or 0 as a plain " ..
    "framework would (the authors' TensorFlow code replaced such gradients by 0); here that counts as a " ..
    "failure, and the table compares the step with the one where the closed form says the loss leaves the " ..
    "doubles. Relative errors are |G' − G'_ref| / |G'_ref| with G'_ref from the closed form " ..
    "G' = Σ p_i (−2λ_i/(1 − ηλ_i))." ..
    ((s.worst.reverse <= 1e-9 and s.worst.forward <= 1e-9) and
      (" Of the claim's three failure modes only overflow and underflow occur here: while f(w_t) stays a normal " ..
       "double, reverse and forward mode lose no precision (worst error %.1e)."):format(
        math.max(s.worst.reverse, s.worst.forward)) or "")
end

--- The report section: claim, settings, evidence, criteria, figures, table and notes.
function M.describe(R, cfg)
  local s = summarize(R)
  return {
    claim = "Back-propagating through the unroll to get G'(η) for the log meta-objective meets intermediate " ..
      "quantities (w_t, f(w_T), the adjoint ∇f/(T·f)) that are exponentially large or small in T, so in floating " ..
      "point it overflows, underflows or loses precision although G'(η) itself is moderate; a stable computation " ..
      "is needed.",
    settings = ("%s; λ ∈ [%.4g, %.4g], 2/λmax = %.4g; w₀ ~ N(0, I); η = {%s}·2/λmax; T ∈ {%s}; " ..
      "methods: metastep reverse (tape), forward (dual numbers), stable, and exact (eigenbasis closed form); " ..
      "reference: closed form in plain Lua from its own Jacobi eigendecomposition (lib/oracle.lua). %s"):format(
      R.problem, R.lmin, R.lmax, R.eta_crit, table.concat(R.fracs, ", "), table.concat(R.Ts, ", "),
      cfg.mode == "quick" and "(--quick stops at T = 10⁴; the default goes to 10⁵.)" or
      cfg.mode == "full" and "" or "(--full uses the paper's H = XᵀX.)"),
    evidence = evidence(R, s),
    criteria = criteria(s),
    figures = {
      {file = "exp2_error.png", data = "exp2_error.csv",
       caption = "Worst relative error of G'(η) over the η grid against T, per method; a run that failed " ..
         "(overflow, underflow, NaN) is drawn at 1, an error of exactly 0 at 1e-17. Raw runs: exp2_runs.csv."},
      {file = "exp2_failstep.png", data = "exp2_failures.csv",
       caption = "Step at which reverse and forward mode stop (they share the unroll, so their points coincide) " ..
         "against η, with the step where the closed-form f(w_t) leaves the normal doubles (curve, " ..
         "exp2_failstep_curve.csv). Near η = 2/λmax and for tiny η the loss decays slowly enough to survive."},
    },
    tables = {{title = "Where each method first fails (T from the grid; kind and step from the run)",
               file = "exp2_failures.csv", markdown = failures_table(R)}},
    notes = notes(s),
  }
end

return M
