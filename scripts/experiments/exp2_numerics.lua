-- Experiment 2: numerics of back-propagation through the unroll (paper, Part 1).
--
-- G(eta) = log f(w_T) / T has a moderate derivative, but computing it by differentiating the
-- unroll carries the iterates w_t, f(w_T) and the adjoint grad f(w_T) / (T f(w_T)), which are
-- exponentially large or small in T. Plain reverse mode and forward mode are compared with
-- metastep's stable method (and its eigenbasis closed form, "exact") against a reference
-- computed here in plain Lua (experiment 1's Jacobi eigendecomposition and closed form), over
-- T up to 10^5 and a grid of eta on both sides of 2/lambda_max.

local DBL_MIN = 2.2250738585072014e-308
local DBL_MAX = 1.7976931348623157e308
local TOL = 1e-6 -- a run that reports "ok" must be this accurate to count as correct

-- Experiment 1 holds the reference (Jacobi eigendecomposition, closed form); load it from the
-- directory this file was loaded from.
local function load_reference()
  local src = debug.getinfo(1, "S").source
  local dir = src:match("^@(.*)/[^/]*$") or "."
  local chunk, err = loadfile(dir .. "/exp1_explosion.lua")
  if not chunk then error(err, 0) end
  return chunk().reference
end

-- log f(w_t) for GD from the closed form (a convex function of t: a logsumexp of affine ones).
local function log_loss_at(lam, c, eta, t)
  local m, terms = -math.huge, {}
  for i = 1, #lam do
    local r = math.abs(1 - eta * lam[i])
    local v = -math.huge
    if c[i] ~= 0 and r > 0 then v = math.log(0.5 * lam[i] * c[i] ^ 2) + 2 * t * math.log(r) end
    terms[i] = v
    if v > m then m = v end
  end
  if m == -math.huge then return m end
  local s = 0
  for i = 1, #terms do s = s + math.exp(terms[i] - m) end
  return m + math.log(s)
end

-- The first step t <= Tmax at which f(w_t) leaves the range of normal doubles according to the
-- closed form (the loss 1/2 x^T H x is summed as x^T H x, so overflow is at 2 f > DBL_MAX), and
-- which way; nil when it stays inside up to Tmax. Convexity in t makes both searches bisections.
local function predicted_failure(lam, c, eta, Tmax)
  local lo_lim, hi_lim = math.log(DBL_MIN), math.log(DBL_MAX) - math.log(2)
  local function g(t) return log_loss_at(lam, c, eta, t) end
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

local METHODS = {"reverse", "forward", "stable", "exact"}

return {
  title = "Numerics of back-propagation for the log meta-objective",
  run = function(cfg, ms)
    local ref = load_reference()
    local mode = cfg.mode
    local d = 20
    local H, problem = ref.make_problem(cfg, ms, d)
    problem = problem .. " (the same quadratic as experiment 1)"
    local obj = ms.objective.quadratic(H)
    local w0 = ms.randn({d}, {seed = 1000 * cfg.seed + 2})
    local lam, V, c = ref.eigencoords(H, w0)
    local lmin, lmax = lam[1], lam[d]
    local eta_crit = 2 / lmax

    -- eta as fractions of 2/lambda_max across (0, 2.5 * 2/lambda_max) = (0, 0.5) for lambda_max = 10;
    -- 1.0 is the measure-zero case |1 - eta lambda_max| = 1.
    local fracs = {0.005, 0.05, 0.15, 0.25, 0.5, 0.75, 0.95, 1.0, 1.05, 1.25, 1.5, 2.0, 2.45}
    local Ts = mode == "quick" and {10, 100, 1000, 10000} or {10, 100, 1000, 10000, 100000}
    local Tmax = Ts[#Ts]

    local runs = {}        -- raw rows for the CSV
    local res = {}         -- res[method][ie][iT] = {status, fail_step, grad, err, class, seconds}
    local secs = {}        -- total seconds per method
    local worst = {}       -- worst error per method over the runs that reported ok
    for _, m in ipairs(METHODS) do res[m], secs[m], worst[m] = {}, 0, 0 end
    local stable_worst, stable_all_ok = 0, true
    local dishonest = {}   -- reverse/forward runs reporting ok with error > TOL
    local refs = {}
    local min_ref = math.huge
    for ie, fr in ipairs(fracs) do
      local eta = fr * eta_crit
      refs[ie] = {}
      for _, m in ipairs(METHODS) do res[m][ie] = {} end
      for iT, T in ipairs(Ts) do
        local cf = ref.closed_form(lam, c, eta, T)
        refs[ie][iT] = cf
        min_ref = math.min(min_ref, math.abs(cf.dG))
        for _, m in ipairs(METHODS) do
          local t0 = os.clock()
          local r = ms.meta.value_and_grad{objective = obj, optimizer = ms.optim.gd{lr = eta}, w0 = w0,
                                           steps = T, meta = "log", method = m}
          local dt = os.clock() - t0
          secs[m] = secs[m] + dt
          local g = r.grad.lr
          local err = math.abs(g - cf.dG) / math.abs(cf.dG)
          local class = r.status
          if class == "ok" then
            if not (err <= TOL) then class = "error" end
            worst[m] = math.max(worst[m], err ~= err and math.huge or err)
          end
          if (m == "reverse" or m == "forward") and r.status == "ok" and not (err <= TOL) then
            dishonest[#dishonest + 1] = ("%s at η=%.3g, T=%d: error %.2e"):format(m, eta, T, err)
          end
          if m == "stable" then
            if class ~= "ok" then stable_all_ok = false end
            stable_worst = math.max(stable_worst, err ~= err and math.huge or err)
          end
          res[m][ie][iT] = {status = r.status, fail_step = r.fail_step, grad = g, err = err, class = class, seconds = dt}
          runs[#runs + 1] = {m, eta, fr, T, r.status, r.fail_step or "", g, cf.dG, err, class, dt}
        end
      end
      cfg.progress("exp2: eta = %.4g done (reverse %s, forward %s at T = %d)", eta,
        res.reverse[ie][#Ts].class, res.forward[ie][#Ts].class, Tmax)
    end

    -- ---- where each method first fails, per eta
    local function first_failure(m, ie)
      for iT, T in ipairs(Ts) do
        local x = res[m][ie][iT]
        if x.class ~= "ok" then return T, x end
      end
    end
    local table_rows, md = {}, {
      "| η | η·λmax/2 | reverse: first failing T (kind, step) | forward: first failing T (kind, step) | " ..
        "stable: first failing T | closed form: f(w_t) leaves the doubles at step |",
      "|---|---|---|---|---|---|"}
    local fail_pts = {reverse = {x = {}, y = {}}, forward = {x = {}, y = {}}}
    local nofail = {x = {}, y = {}}
    local naive_fail_big = {reverse = false, forward = false}
    local match_pred, n_pred = 0, 0
    for ie, fr in ipairs(fracs) do
      local eta = fr * eta_crit
      local pstep, pkind = predicted_failure(lam, c, eta, Tmax)
      local cells, row = {}, {eta, fr}
      for _, m in ipairs{"reverse", "forward", "stable"} do
        local T, x = first_failure(m, ie)
        if T then
          cells[#cells + 1] = ("%d (%s%s)"):format(T, x.class, x.fail_step and (", step " .. x.fail_step) or
            (", error %.1e"):format(x.err))
          if T >= 1000 and m ~= "stable" then naive_fail_big[m] = true end
          row[#row + 1], row[#row + 1], row[#row + 1] = T, x.class, x.fail_step or ""
          if fail_pts[m] and x.fail_step then
            fail_pts[m].x[#fail_pts[m].x + 1], fail_pts[m].y[#fail_pts[m].y + 1] = eta, x.fail_step
          end
          if m ~= "stable" and x.fail_step and pstep then
            n_pred = n_pred + 1
            if math.abs(x.fail_step - pstep) <= 1 then match_pred = match_pred + 1 end
          end
        else
          cells[#cells + 1] = ("none up to %d"):format(Tmax)
          row[#row + 1], row[#row + 1], row[#row + 1] = "", "ok", ""
          if m == "reverse" then nofail.x[#nofail.x + 1], nofail.y[#nofail.y + 1] = eta, Tmax end
        end
      end
      row[#row + 1], row[#row + 1] = pstep or "", pkind or ""
      table_rows[#table_rows + 1] = row
      md[#md + 1] = ("| %.4g | %.3f | %s | %s | %s | %s |"):format(eta, fr, cells[1], cells[2], cells[3],
        pstep and ("%d (%s)"):format(pstep, pkind) or ("none up to %d"):format(Tmax))
    end

    -- ---- worst error over eta per (method, T); a failed run counts as error 1
    local err_rows, series = {}, {}
    local FLOOR = 1e-17 -- an error of exactly 0 is drawn at this floor on the log axis
    for _, m in ipairs(METHODS) do
      -- forward is dashed: it coincides with reverse wherever both fail.
      local s = {x = {}, y = {}, label = m, dash = m == "exact" or m == "forward"}
      for iT, T in ipairs(Ts) do
        local w, nfail = 0, 0
        for ie = 1, #fracs do
          local x = res[m][ie][iT]
          if x.class == "ok" then w = math.max(w, x.err) else w, nfail = 1, nfail + 1 end
        end
        s.x[iT], s.y[iT] = T, math.max(w, FLOOR)
        err_rows[#err_rows + 1] = {m, T, w, nfail, #fracs}
      end
      series[#series + 1] = s
    end

    -- ---- files and figures
    local out = cfg.out
    assert(ms.plot.write_csv(out .. "/exp2_runs.csv",
      {"method", "eta", "eta_over_2_lmax", "T", "status", "fail_step", "G_prime", "G_prime_closed",
       "rel_error", "class", "seconds"}, runs))
    assert(ms.plot.write_csv(out .. "/exp2_error.csv",
      {"method", "T", "worst_rel_error_failed_as_1", "failed_runs", "eta_values"}, err_rows))
    assert(ms.plot.write_csv(out .. "/exp2_failures.csv",
      {"eta", "eta_over_2_lmax", "reverse_first_fail_T", "reverse_kind", "reverse_step",
       "forward_first_fail_T", "forward_kind", "forward_step", "stable_first_fail_T", "stable_kind", "stable_step",
       "predicted_step", "predicted_kind"}, table_rows))
    local function check_plot(ok, err) if not ok then error(err, 0) end end
    check_plot(ms.plot.figure{
      file = out .. "/exp2_error.png",
      title = "Relative error of G'(η) for the log meta-objective, worst case over the η grid",
      xlabel = "unroll length T (steps, log scale)", ylabel = "worst relative error (log scale; failed run = 1)",
      logx = true, logy = true, series = series, yrange = {1e-18, 10},
      hlines = {{y = TOL, label = "1e-6"}}, key = "bottom right",
    })
    -- Predicted failure step as a dense curve over eta (closed form), measured steps as points.
    local px, py, curve_rows = {}, {}, {}
    for k = 1, 500 do
      local eta = 2.5 * eta_crit * k / 500
      local p = predicted_failure(lam, c, eta, Tmax)
      px[k], py[k] = eta, p or Tmax
      curve_rows[k] = {eta, p or ""}
    end
    assert(ms.plot.write_csv(out .. "/exp2_failstep_curve.csv", {"eta", "predicted_fail_step"}, curve_rows))
    check_plot(ms.plot.figure{
      file = out .. "/exp2_failstep.png",
      title = "Step at which plain reverse/forward mode first fail (f(w_t) leaves the doubles)",
      xlabel = "step size η", ylabel = "step t of the first non-finite / underflowed value (log scale)",
      logy = true, yrange = {1, Tmax * 3},
      series = {
        {x = px, y = py, label = ("closed form: f(w_t) outside [10^{-308}, 10^{308}] (capped at T = %d)"):format(Tmax),
         with = "lines"},
        {x = fail_pts.reverse.x, y = fail_pts.reverse.y, label = "reverse mode: step where it stopped", with = "points"},
        {x = fail_pts.forward.x, y = fail_pts.forward.y, label = "forward mode: step where it stopped", with = "points"},
        {x = nofail.x, y = nofail.y, label = ("reverse/forward: no failure up to T = %d"):format(Tmax), with = "points"},
      },
      vlines = {{x = eta_crit, label = "2/λ_{max}"}}, key = "bottom center",
    })

    -- ---- criteria and evidence
    local fails_big_rows = {}
    for _, m in ipairs{"reverse", "forward"} do
      local n = 0
      for ie = 1, #fracs do
        for iT, T in ipairs(Ts) do
          if T >= 1000 and res[m][ie][iT].class ~= "ok" then n = n + 1 end
        end
      end
      fails_big_rows[m] = n
    end
    local n_big = 0
    for _, T in ipairs(Ts) do if T >= 1000 then n_big = n_big + 1 end end
    n_big = n_big * #fracs
    local per_call = {}
    for _, m in ipairs(METHODS) do per_call[#per_call + 1] = ("%s %.1f s"):format(m, secs[m]) end
    -- The slowest single run of each method at Tmax that reported ok.
    local function slowest_ok(m)
      local best
      for ie = 1, #fracs do
        local x = res[m][ie][#Ts]
        if x.class == "ok" and (not best or x.seconds > best) then best = x.seconds end
      end
      return best
    end
    local sl = {}
    for _, m in ipairs{"stable", "reverse", "forward"} do
      local v = slowest_ok(m)
      sl[#sl + 1] = ("%s %s"):format(m, v and ("%.2f s"):format(v) or "n/a")
    end
    local ok_rf = {}
    for _, m in ipairs{"reverse", "forward"} do
      local n = 0
      for ie = 1, #fracs do if res[m][ie][#Ts].class == "ok" then n = n + 1 end end
      ok_rf[m] = n
    end
    local ok_etas = {}
    for ie, fr in ipairs(fracs) do
      if res.reverse[ie][#Ts].class == "ok" then ok_etas[#ok_etas + 1] = ("%.3g"):format(fr * eta_crit) end
    end

    return {
      claim = "Back-propagating through the unroll to get G'(η) for the log meta-objective meets intermediate " ..
        "quantities (w_t, f(w_T), the adjoint ∇f/(T·f)) that are exponentially large or small in T, so in floating " ..
        "point it overflows, underflows or loses precision although G'(η) itself is moderate; a stable computation " ..
        "is needed.",
      settings = ("%s; λ ∈ [%.4g, %.4g], 2/λmax = %.4g; w₀ ~ N(0, I); η = {%s}·2/λmax; T ∈ {%s}; " ..
        "methods: metastep reverse (tape), forward (dual numbers), stable, and exact (eigenbasis closed form); " ..
        "reference: closed form in plain Lua from this script's own Jacobi eigendecomposition. %s"):format(
        problem, lmin, lmax, eta_crit, table.concat(fracs, ", "), table.concat(Ts, ", "),
        mode == "quick" and "(--quick stops at T = 10⁴; the default goes to 10⁵.)" or
        mode == "full" and "" or "(--full uses the paper's H = XᵀX.)"),
      evidence = {
        ("Plain reverse and forward mode fail on %d and %d of the %d (η, T) runs with T ≥ 1000; at T = %d they " ..
         "return a number only for η ∈ {%s}."):format(fails_big_rows.reverse, fails_big_rows.forward, n_big, Tmax,
          table.concat(ok_etas, ", ")),
        ("%s: the worst error of reverse/forward over the runs they report as ok is %.2e / %.2e; their fail " ..
         "step matches the step where the closed-form f(w_t) leaves the normal doubles (±1 step) in %d of %d " ..
         "failing cases."):format(#dishonest == 0 and "No run reported ok with a wrong number" or
          (#dishonest .. " runs reported ok with an error above 1e-6"), worst.reverse, worst.forward, match_pred, n_pred),
        ("The stable method reports ok at all %d (η, T) points with worst relative error %.2e (exact: %.2e); " ..
         "the smallest |G'| in the grid is %.3g, so relative errors are well defined."):format(
          #fracs * #Ts, stable_worst, worst.exact, min_ref),
        ("Time per method over the whole grid: %s; slowest single run at T = %d that reported ok: %s."):format(
          table.concat(per_call, ", "), Tmax, table.concat(sl, ", ")),
      },
      criteria = {
        {text = "stable: status ok and relative error ≤ 1e-8 at every (T, η)",
         value = ("worst %.2e%s"):format(stable_worst, stable_all_ok and "" or ", some runs not ok"),
         pass = stable_all_ok and stable_worst <= 1e-8},
        {text = "plain reverse mode fails (status ≠ ok or error > 1e-6) at some (T, η) with T ≥ 1000",
         value = ("%d of %d runs"):format(fails_big_rows.reverse, n_big), pass = naive_fail_big.reverse},
        {text = "plain forward mode fails (status ≠ ok or error > 1e-6) at some (T, η) with T ≥ 1000",
         value = ("%d of %d runs"):format(fails_big_rows.forward, n_big), pass = naive_fail_big.forward},
        {text = "reverse and forward are honest: wherever they report ok, relative error ≤ 1e-6",
         value = #dishonest == 0 and ("worst %.2e / %.2e"):format(worst.reverse, worst.forward)
           or table.concat(dishonest, "; "),
         pass = #dishonest == 0},
      },
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
                 file = "exp2_failures.csv", markdown = table.concat(md, "\n")}},
      notes = "metastep's reverse and forward modes stop the unroll at the first step whose loss is not a normal " ..
        "double (status underflow/overflow with fail_step) instead of back-propagating NaN or 0 as a plain " ..
        "framework would (the authors' TensorFlow code replaced such gradients by 0); here that counts as a " ..
        "failure, and the table compares the step with the one where the closed form says the loss leaves the doubles. " ..
        "Relative errors are |G' − G'_ref| / |G'_ref| with G'_ref from the closed form G' = Σ p_i (−2λ_i/(1 − ηλ_i))." ..
        ((worst.reverse <= 1e-9 and worst.forward <= 1e-9) and
          (" Of the claim's three failure modes only overflow and underflow occur here: while f(w_t) stays a normal " ..
           "double, reverse and forward mode lose no precision (worst error %.1e)."):format(
            math.max(worst.reverse, worst.forward)) or ""),
    }
  end,
}
