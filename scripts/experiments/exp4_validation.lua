-- Experiment 4: train-by-train vs train-by-validation on least squares (paper, Section 5 and its
-- Figures 3 and 4). For each setting (n samples per task, label noise sigma) the step size of
-- GD (T = 40 steps from w = 0, runs frozen at norm 40 sigma) is chosen by grid search over 25
-- log-spaced values in [1e-6, 1]: once on the mean training loss at w_T over m tasks of n
-- samples (train-by-train), once on the mean validation loss over m tasks of n/2 + n/2 samples
-- (train-by-validation). Each chosen step size is tested on fresh tasks: GD on n fresh samples,
-- error |w_T - w*|^2 and RMSE on fresh test samples, next to the best step size of the grid for
-- that same test error.
--
-- GD on least squares is linear, so the 25 step sizes run at once in the eigenbasis of the
-- empirical Hessian X^T X / n (one eigendecomposition per task instead of 25 unrolls); the
-- 40 sigma freeze is applied from the iterate norms along the trajectory. This fast path is
-- checked against ms.meta.value and ms.meta.unroll (the library's own unroll with
-- freeze_norm) on a few tasks of the extreme settings, and the discrepancy is a criterion.
local report = require "lib.report"

local M = {title = "Train-by-train vs train-by-validation (least squares, GD step size)"}

local T = 40          -- GD steps, as in the paper
local FREEZE = 40     -- runs frozen at norm FREEZE * sigma
local NGRID = 25      -- step sizes log-spaced in [1e-6, 1]

-- Sizes per mode; ratios n/d, the even split, T and the grid are those of the paper.
local SIZES = {
  quick = {d = 50, m = 100, test_tasks = 40, test_samples = 400, boot = 50, check_tasks = 1,
           sigmas = {0.25, 1, 4}, ratios = {0.5, 16}},
  default = {d = 100, m = 300, test_tasks = 100, test_samples = 1000, boot = 200, check_tasks = 2,
             sigmas = {0.125, 0.25, 0.5, 1, 2, 4}, ratios = {0.25, 0.5, 1, 2, 4, 8, 16}},
  full = {d = 1000, m = 300, test_tasks = 10, test_samples = 1000, boot = 200, check_tasks = 2,
          sigmas = {0.125, 0.25, 0.5, 1, 2, 4}, ratios = {0.25, 0.5, 1, 2, 4, 8, 16}},
}
local SIGMA_RATIO = 0.5 -- the sigma sweep runs at n = d/2 (the paper's n = 500, d = 1000)
local N_SIGMA = 1       -- the n sweep runs at sigma = 1

local function grid()
  local etas = {}
  for k = 1, NGRID do etas[k] = 10 ^ (-6 + 6 * (k - 1) / (NGRID - 1)) end
  return etas
end

-- Eigendecomposition of the empirical Hessian H = X^T X / n of a training set.
local function spectrum(ms, X)
  local n = X:shape()[1]
  local H = ms.matmul(X:t(), X) * (1 / n)
  H = (H + H:t()) * 0.5
  local lam, Q = ms.eigh(H)
  return {lam = lam, Q = Q, X = X}
end

-- Final GD iterates w_T for every step size of eta_t ([K]) at once, as the rows of a [K, d]
-- tensor, for the least-squares loss 1/(2n) |X w - y|^2 from w_0 = 0 with the freeze at norm R.
-- In the eigenbasis u = Q^T w, GD is u <- (1 - eta lambda) u + eta c with c = Q^T X^T y / n.
-- Also returns the step at which each run froze (nil when it did not).
local function final_iterates(ms, sp, y, eta_t, R)
  local X, lam, Q = sp.X, sp.lam, sp.Q
  local n = X:shape()[1]
  local K, d = eta_t:numel(), lam:numel()
  local c = ms.matvec(Q:t(), ms.matvec(X:t(), y) * (1 / n))
  local A = ms.outer(eta_t, lam) * -1 + 1
  local E = ms.outer(eta_t, c)
  local U = ms.zeros({K, d})
  local frozen, active = {}, K
  for t = 1, T do
    if active == 0 then break end
    local Un = A * U + E
    local nrm = ms.sqrt((Un * Un):sum(2)):totable()
    local keep, scale = {}, {}
    for k = 1, K do
      if frozen[k] then
        keep[k], scale[k] = 1, 0
      elseif nrm[k] >= R then
        keep[k], scale[k] = 0, R / nrm[k]
        frozen[k] = t
        active = active - 1
      else
        keep[k], scale[k] = 0, 1
      end
    end
    U = U * ms.tensor(keep):reshape(K, 1) + Un * ms.tensor(scale):reshape(K, 1)
  end
  return ms.matmul(U, Q:t()), frozen
end

-- 1/(2n) |X w - y|^2 for every row w of W, as a list.
local function losses(ms, W, X, y)
  local n = X:shape()[1]
  local r = ms.matmul(W, X:t()) - y
  return ((r * r):sum(2) * (0.5 / n)):totable()
end

local function mean_se(xs)
  local n, s = #xs, 0
  for _, x in ipairs(xs) do s = s + x end
  local m = s / n
  local v = 0
  for _, x in ipairs(xs) do v = v + (x - m) ^ 2 end
  return m, n > 1 and math.sqrt(v / (n - 1) / n) or 0
end

-- Column means of a list of rows.
local function col_means(rows)
  local K, mean = #rows[1], {}
  for k = 1, K do mean[k] = 0 end
  for _, r in ipairs(rows) do for k = 1, K do mean[k] = mean[k] + r[k] / #rows end end
  return mean
end

local function argmin(xs)
  local best = 1
  for k = 2, #xs do if xs[k] < xs[best] then best = k end end
  return best
end

-- Bootstrap of the grid search over tasks: the 10% and 90% quantiles of the chosen step size
-- when the m tasks are resampled with replacement.
local function bootstrap(ms, rows, etas, B, seed)
  local m, K = #rows, #rows[1]
  local u = ms.rand({B * m}, {seed = seed, lo = 0, hi = m}):totable()
  local picks = {}
  for b = 1, B do
    local s = {}
    for k = 1, K do s[k] = 0 end
    for i = 1, m do
      local r = rows[math.floor(u[(b - 1) * m + i]) + 1]
      for k = 1, K do s[k] = s[k] + r[k] end
    end
    picks[b] = etas[argmin(s)]
  end
  table.sort(picks)
  return picks[math.max(1, math.floor(0.1 * B + 0.5))], picks[math.min(B, math.floor(0.9 * B + 0.5))]
end

local function fmt_eta(x) return ("%.3g"):format(x) end

-- The n values and, for each, the sigmas it runs with: sigma = N_SIGMA for every n, the whole
-- sigma sweep at n = SIGMA_RATIO * d.
local function settings(S)
  local d = S.d
  local n_list, sig_of = {}, {}
  local n_sigma = math.floor(SIGMA_RATIO * d + 0.5)
  for _, r in ipairs(S.ratios) do
    local n = math.floor(r * d + 0.5)
    n_list[#n_list + 1] = n
    sig_of[n] = {N_SIGMA}
  end
  if not sig_of[n_sigma] then n_list[#n_list + 1] = n_sigma; table.sort(n_list) end
  local sl = {}
  for _, s in ipairs(S.sigmas) do sl[#sl + 1] = s end
  local has = false
  for _, s in ipairs(sl) do if s == N_SIGMA then has = true end end
  if not has then sl[#sl + 1] = N_SIGMA; table.sort(sl) end
  sig_of[n_sigma] = sl
  return n_list, sig_of, n_sigma
end

-- Cross-check of the fast path against the library's unroll (meta.value / meta.unroll) on
-- every grid step size of one task; accumulates into check.
local function cross_check(ms, check, etas, task, sigma, meta, W)
  local R = FREEZE * sigma
  for k, eta in ipairs(etas) do
    local spec = {task = task, optimizer = ms.optim.gd{lr = eta}, steps = T, meta = meta, freeze_norm = R,
                  method = "reverse"}
    if meta == "test" then
      spec.meta = "train"
      local traj = ms.meta.unroll(spec)
      local wk = W:select(1, k)
      local rel = ms.max_abs_diff(wk, traj.w_T) / math.max(1, traj.w_T:norm():item())
      check.max_rel = math.max(check.max_rel, rel)
      if traj.status ~= "ok" then check.statuses[traj.status] = true end
    else
      local ref, st = ms.meta.value(spec)
      local obj = meta == "train" and task.objective or task.valid_objective
      local fast = obj:value(W:select(1, k)):item()
      local rel = math.abs(fast - ref) / math.max(1e-300, math.abs(ref))
      check.max_rel = math.max(check.max_rel, rel)
      if st ~= "ok" then check.statuses[st] = true end
    end
    check.count = check.count + 1
  end
end

-- The task roles of one n: the two meta-objectives, the test tasks, and the secondary
-- protocol (GD on n/2 fresh samples, the training size train-by-validation tuned for).
local function roles(S, n)
  local n_tr = n // 2
  return {
    {key = "tt", count = S.m, opts = {n_train = n, n_valid = 0, n_test = 0}},
    {key = "tv", count = S.m, opts = {n_train = n_tr, n_valid = n - n_tr, n_test = 0}},
    {key = "test", count = S.test_tasks, opts = {n_train = n, n_valid = 0, n_test = S.test_samples}},
    {key = "half", count = S.test_tasks, opts = {n_train = n_tr, n_valid = 0, n_test = 0}},
  }
end

-- The 25 values (one per grid step size) that task i of a role contributes to res.
local function record(ms, res, key, i, W, task)
  if key == "tt" then
    res.tt[i] = losses(ms, W, task.train.X, task.train.y)
  elseif key == "tv" then
    res.tv[i] = losses(ms, W, task.valid.X, task.valid.y)
  elseif key == "half" then
    local e = ms.sub(W, task.wstar)
    res.half[i] = (e * e):sum(2):totable()
  else
    local e = ms.sub(W, task.wstar)
    res.err[i] = (e * e):sum(2):totable()
    local tl = losses(ms, W, task.test.X, task.test.y)
    for k = 1, #tl do tl[k] = math.sqrt(2 * tl[k]) end
    res.rmse[i] = tl
  end
end

-- Every task of one n (the j-th): results[s] = {tt, tv, err, rmse, half}, one row per task.
local function measure_n(ms, cfg, C, j, n)
  local S, sigmas, results = C.S, C.sig_of[n], {}
  for _, s in ipairs(sigmas) do results[s] = {tt = {}, tv = {}, err = {}, rmse = {}, half = {}} end
  local extreme = (n == C.n_sigma) or (j == #C.n_list)
  for ri, role in ipairs(roles(S, n)) do
    -- One sampler per sigma with the same seed: the tasks share X, w* and the standardized
    -- noise across sigma (common random numbers), so one eigendecomposition serves all sigmas.
    local samplers = {}
    for si, s in ipairs(sigmas) do
      samplers[si] = ms.tasks.least_squares{d = S.d, n_train = role.opts.n_train, n_valid = role.opts.n_valid,
        n_test = role.opts.n_test, sigma = s, seed = cfg.seed * 1000 + j * 10 + ri}
    end
    local meter = report.meter(cfg.progress, ("exp4: n = %d (%d/%d), %s tasks"):format(n, j, #C.n_list, role.key),
      role.count)
    for i = 1, role.count do
      local sp
      for si, s in ipairs(sigmas) do
        local task = samplers[si]()
        if not sp or ms.max_abs_diff(sp.X, task.train.X) ~= 0 then sp = spectrum(ms, task.train.X) end
        local W = final_iterates(ms, sp, task.train.y, C.eta_t, FREEZE * s)
        record(ms, results[s], role.key, i, W, task)
        if extreme and i <= S.check_tasks and role.key ~= "half" and (s == sigmas[#sigmas] or s == sigmas[1]) then
          cross_check(ms, C.check, C.etas, task, s,
            role.key == "tt" and "train" or role.key == "tv" and "valid" or "test", W)
        end
      end
      -- Large tasks (the --full sizes hold 100 MB data matrices): release them before the next draw.
      if n * S.d >= 1e6 then collectgarbage() end
      if i < role.count then meter:step(i) end
    end
  end
  return results
end

-- Means and standard errors per grid step size, the chosen step sizes, and the bootstrap
-- ranges of the choices, for one setting (n, s).
local function summarize(ms, C, res, n, s)
  local out = {n = n, sigma = s}
  out.tt_curve, out.tv_curve = col_means(res.tt), col_means(res.tv)
  out.k_tt, out.k_tv = argmin(out.tt_curve), argmin(out.tv_curve)
  local errm, errse, rm, rse = {}, {}, {}, {}
  for k = 1, NGRID do
    local col, rcol = {}, {}
    for i = 1, #res.err do col[i] = res.err[i][k]; rcol[i] = res.rmse[i][k] end
    errm[k], errse[k] = mean_se(col)
    rm[k], rse[k] = mean_se(rcol)
  end
  out.err, out.err_se, out.rmse, out.rmse_se = errm, errse, rm, rse
  out.k_best = argmin(errm)
  local hm, hse = {}, {}
  for k = 1, NGRID do
    local col = {}
    for i = 1, #res.half do col[i] = res.half[i][k] end
    hm[k], hse[k] = mean_se(col)
  end
  out.half, out.half_se, out.k_half = hm, hse, argmin(hm)
  local bs = C.seed * 7919 + n * 31 + math.floor(s * 1000)
  out.tt_lo, out.tt_hi = bootstrap(ms, res.tt, C.etas, C.S.boot, bs)
  out.tv_lo, out.tv_hi = bootstrap(ms, res.tv, C.etas, C.S.boot, bs + 1)
  return out
end

--- Runs the grid search of both meta-objectives and the tests for every setting; returns
-- the summaries of the sigma sweep (sig_rows), of the n sweep (n_rows) and the cross-check.
function M.measure(cfg, ms)
  local S = SIZES[cfg.mode] or SIZES.default
  local etas = grid()
  local C = {S = S, d = S.d, m = S.m, etas = etas, eta_t = ms.tensor(etas), seed = cfg.seed, clock0 = os.clock(),
             check = {max_rel = 0, count = 0, statuses = {}}}
  C.n_list, C.sig_of, C.n_sigma = settings(S)
  local results = {}
  for j, n in ipairs(C.n_list) do
    results[n] = measure_n(ms, cfg, C, j, n)
    cfg.progress("exp4: n = %d done (%.0f s cpu)", n, os.clock() - C.clock0)
  end
  C.sig_rows, C.n_rows = {}, {}
  for _, s in ipairs(C.sig_of[C.n_sigma]) do
    C.sig_rows[#C.sig_rows + 1] = summarize(ms, C, results[C.n_sigma][s], C.n_sigma, s)
  end
  for _, n in ipairs(C.n_list) do
    local r
    for _, sr in ipairs(C.sig_rows) do if n == C.n_sigma and sr.sigma == N_SIGMA then r = sr end end
    C.n_rows[#C.n_rows + 1] = r or summarize(ms, C, results[n][N_SIGMA], n, N_SIGMA)
  end
  -- Every setting once: the sigma sweep, then the n sweep without its shared point.
  C.all_rows = {}
  for _, r in ipairs(C.sig_rows) do C.all_rows[#C.all_rows + 1] = r end
  for _, r in ipairs(C.n_rows) do
    if not (r.n == C.n_sigma and r.sigma == N_SIGMA) then C.all_rows[#C.all_rows + 1] = r end
  end
  C.few = C.sig_rows[#C.sig_rows] -- the few-noisy setting: n = d/2, the largest sigma
  C.big = C.n_rows[#C.n_rows]     -- many samples
  return C
end

local HEADER = {"n", "n_over_d", "sigma", "eta_tt", "eta_tt_boot10", "eta_tt_boot90", "eta_tv", "eta_tv_boot10",
  "eta_tv_boot90", "eta_best", "err_tt", "err_tt_se", "err_tv", "err_tv_se", "err_best", "err_best_se",
  "rmse_tt", "rmse_tt_se", "rmse_tv", "rmse_tv_se", "rmse_best", "rmse_best_se",
  "eta_best_half", "err_half_tv", "err_half_tv_se", "err_half_best", "err_half_best_se"}

local function csv_rows(C, rows)
  local etas, out = C.etas, {}
  for i, r in ipairs(rows) do
    out[i] = {r.n, r.n / C.d, r.sigma, etas[r.k_tt], r.tt_lo, r.tt_hi, etas[r.k_tv], r.tv_lo, r.tv_hi,
      etas[r.k_best], r.err[r.k_tt], r.err_se[r.k_tt], r.err[r.k_tv], r.err_se[r.k_tv], r.err[r.k_best],
      r.err_se[r.k_best], r.rmse[r.k_tt], r.rmse_se[r.k_tt], r.rmse[r.k_tv], r.rmse_se[r.k_tv], r.rmse[r.k_best],
      r.rmse_se[r.k_best], etas[r.k_half], r.half[r.k_tv], r.half_se[r.k_tv], r.half[r.k_half], r.half_se[r.k_half]}
  end
  return out
end

-- The test-error and chosen-step-size figures of one sweep.
local function sweep_figures(C, cfg, ms, rows, xkey, xlabel, stem, what)
  local etas, d = C.etas, C.d
  local x, ett, etv, ebest, stt, stv, sbest, ytt, ytv, ybest, lim = {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}
  local yhalf = {}
  for i, r in ipairs(rows) do
    x[i] = xkey == "sigma" and r.sigma or r.n / d
    ett[i], etv[i], ebest[i] = r.err[r.k_tt], r.err[r.k_tv], r.err[r.k_best]
    stt[i], stv[i], sbest[i] = r.err_se[r.k_tt], r.err_se[r.k_tv], r.err_se[r.k_best]
    ytt[i], ytv[i], ybest[i], yhalf[i] = etas[r.k_tt], etas[r.k_tv], etas[r.k_best], etas[r.k_half]
    -- GD on H = X^T X / n is stable for eta < 2 / lambda_max, lambda_max near (1 + sqrt(d/n))^2.
    lim[i] = 2 / (1 + math.sqrt(d / r.n)) ^ 2
  end
  report.figure(ms, cfg.out, {file = stem .. "_loss.png",
    title = ("Test error of GD with the chosen step size (%s; d = %d, T = %d)"):format(what, d, T),
    xlabel = xlabel, ylabel = "test error |w_T - w*|^2 (mean ± s.e. over test tasks)",
    logx = true, logy = true, key = "top left",
    series = {
      {x = x, y = ett, yerr = stt, label = "train-by-train"},
      {x = x, y = etv, yerr = stv, label = "train-by-validation"},
      {x = x, y = ebest, yerr = sbest, label = "best step size of the grid (on test error)", dash = true},
    },
    hlines = {{y = 1, label = "|w*|^2 = 1 (the zero predictor)"}}})
  local ylo = 1
  for i = 1, #x do ylo = math.min(ylo, ytt[i], ytv[i], ybest[i], yhalf[i]) end
  report.figure(ms, cfg.out, {file = stem .. "_eta.png",
    title = ("Step size chosen by grid search (%s; d = %d, T = %d)"):format(what, d, T),
    xlabel = xlabel, ylabel = "step size eta (log scale)", logx = true, logy = true, key = "bottom right",
    yrange = {ylo / 300, 3}, -- room below the data for the key
    series = {
      {x = x, y = ytt, label = "train-by-train"},
      {x = x, y = ytv, label = "train-by-validation"},
      {x = x, y = ybest, label = "best for the test error (GD on n samples)", dash = true},
      {x = x, y = yhalf, label = "best for the test error of GD on n/2 samples", dash = true},
      {x = x, y = lim, label = "stability limit 2/(1+sqrt(d/n))^2", with = "lines", dash = true},
    }})
end

-- The meta-objective curves of the few-noisy setting: CSV and figure.
local function curves(C, cfg, ms)
  local few, etas = C.few, C.etas
  local rows, test_loss = {}, {}
  for k = 1, NGRID do
    test_loss[k] = 0.5 * (few.err[k] + few.sigma ^ 2)
    rows[k] = {etas[k], few.tt_curve[k], few.tv_curve[k], test_loss[k], few.err[k]}
  end
  report.csv(ms, cfg.out, "exp4_curves.csv",
    {"eta", "train_by_train_meta", "train_by_validation_meta", "test_loss", "test_err"}, rows)
  report.figure(ms, cfg.out, {file = "exp4_curves.png",
    title = ("Meta-objectives against eta, n = %d, d = %d, sigma = %g (mean over %d tasks)"):format(
      few.n, C.d, few.sigma, C.m),
    xlabel = "step size eta (log scale)", ylabel = "loss at w_T (log scale)", logx = true, logy = true,
    key = "bottom left",
    series = {
      {x = etas, y = few.tt_curve, label = "train-by-train: training loss"},
      {x = etas, y = few.tv_curve, label = "train-by-validation: validation loss"},
      {x = etas, y = test_loss, label = "test loss (|w_T - w*|^2 + sigma^2)/2, GD on n samples", dash = true},
    },
    vlines = {{x = etas[few.k_tt], label = "tbt"}, {x = etas[few.k_tv], label = "tbv"}}})
end

--- Writes exp4_sigma.csv, exp4_n.csv, exp4_table.csv, exp4_curves.csv and five figures.
function M.write(C, cfg, ms)
  report.csv(ms, cfg.out, "exp4_sigma.csv", HEADER, csv_rows(C, C.sig_rows))
  report.csv(ms, cfg.out, "exp4_n.csv", HEADER, csv_rows(C, C.n_rows))
  sweep_figures(C, cfg, ms, C.sig_rows, "sigma", "label noise sigma (log scale)", "exp4_sigma",
    ("n = d/2 = %d"):format(C.n_sigma))
  sweep_figures(C, cfg, ms, C.n_rows, "n", "samples per task n/d (log scale)", "exp4_n",
    ("sigma = %g"):format(N_SIGMA))
  curves(C, cfg, ms)
  report.csv(ms, cfg.out, "exp4_table.csv", HEADER, csv_rows(C, C.all_rows))
end

local function figures(C)
  local list = {}
  local function sweep(stem, what, data)
    list[#list + 1] = {file = stem .. "_loss.png", data = data,
      caption = ("Test error ‖w_T − w*‖² of GD (T = %d, GD on n fresh samples) with the step size chosen by each " ..
        "meta-objective and the best step size of the grid, %s; error bars: standard error over %d test tasks."):format(
        T, what, C.S.test_tasks)}
    list[#list + 1] = {file = stem .. "_eta.png", data = data,
      caption = ("Step size η chosen on the 25-point grid by train-by-train (training loss, n samples), " ..
        "train-by-validation (validation loss, n/2 + n/2) and on the test error of GD on n (and on n/2) fresh " ..
        "samples, %s. Dashed line: the GD stability limit 2/λmax for n training samples " ..
        "(Marchenko–Pastur edge)."):format(what)}
  end
  sweep("exp4_sigma", ("n = d/2 = %d"):format(C.n_sigma), "exp4_sigma.csv")
  sweep("exp4_n", ("sigma = %g"):format(N_SIGMA), "exp4_n.csv")
  list[#list + 1] = {file = "exp4_curves.png", data = "exp4_curves.csv",
    caption = ("The two meta-objectives and the test loss against η in the few-noisy setting (n = d/2 = %d, " ..
      "σ = %g). Runs reaching norm 40σ are frozen there, which makes the large-η plateau. Vertical lines: " ..
      "the step sizes chosen by train-by-train (tbt) and train-by-validation (tbv)."):format(C.few.n, C.few.sigma)}
  return list
end

local function table_md(C)
  local etas, md = C.etas, {}
  for _, r in ipairs(C.all_rows) do
    md[#md + 1] = {r.n, ("%.3g"):format(r.n / C.d), ("%g"):format(r.sigma),
      ("%s [%s, %s]"):format(fmt_eta(etas[r.k_tt]), fmt_eta(r.tt_lo), fmt_eta(r.tt_hi)),
      ("%s [%s, %s]"):format(fmt_eta(etas[r.k_tv]), fmt_eta(r.tv_lo), fmt_eta(r.tv_hi)), fmt_eta(etas[r.k_best]),
      ("%.4g ± %.2g"):format(r.err[r.k_tt], r.err_se[r.k_tt]), ("%.4g ± %.2g"):format(r.err[r.k_tv], r.err_se[r.k_tv]),
      ("%.4g ± %.2g"):format(r.err[r.k_best], r.err_se[r.k_best]), ("%.4g"):format(r.rmse[r.k_tt]),
      ("%.4g"):format(r.rmse[r.k_tv]), ("%.4g"):format(r.rmse[r.k_best]), fmt_eta(etas[r.k_half]),
      ("%.4g ± %.2g"):format(r.half[r.k_tv], r.half_se[r.k_tv]),
      ("%.4g ± %.2g"):format(r.half[r.k_half], r.half_se[r.k_half])}
  end
  return report.md_table({"n", "n/d", "σ", "η tbt [10–90%]", "η tbv [10–90%]", "η best", "err tbt", "err tbv",
    "err best", "RMSE tbt", "RMSE tbv", "RMSE best", "η best (n/2)", "err tbv (n/2)", "err best (n/2)"}, md)
end

-- The largest ratio of train-by-validation's error to the grid-best error over all settings,
-- for GD on n samples (key "err") or on n/2 samples (key "half"), and where it occurs.
local function worst_ratio(C, key)
  local worst, at = 0, nil
  for _, r in ipairs(C.all_rows) do
    local q = r[key][r.k_tv] / r[key][key == "err" and r.k_best or r.k_half]
    if q > worst then worst, at = q, r end
  end
  return worst, at
end

-- The thresholds are in the text, the pass computed from the data.
local function criteria(C)
  local etas, few, big, check = C.etas, C.few, C.big, C.check
  local e_tt, e_tv = few.err[few.k_tt], few.err[few.k_tv]
  local worst, worst_r = worst_ratio(C, "err")
  local b_tt, b_tv = big.err[big.k_tt], big.err[big.k_tv]
  local q = math.max(b_tt, b_tv) / math.min(b_tt, b_tv)
  return {
    report.criterion("The fast eigenbasis path agrees with ms.meta.value / ms.meta.unroll (GD with freeze_norm = " ..
      "40σ) on " ..
      "every grid step size of the checked tasks: max relative discrepancy ≤ 1e-9",
      ("%.2e over %d comparisons%s"):format(check.max_rel, check.count,
        next(check.statuses) and " (unroll statuses not ok!)" or ""),
      check.max_rel <= 1e-9 and check.count > 0 and not next(check.statuses)),
    report.criterion(("Few noisy samples (n = d/2, σ = %g): train-by-train picks a larger η than " ..
      "train-by-validation"):format(few.sigma),
      ("η tbt = %s, η tbv = %s"):format(fmt_eta(etas[few.k_tt]), fmt_eta(etas[few.k_tv])),
      etas[few.k_tt] > etas[few.k_tv]),
    report.criterion(("Few noisy samples (n = d/2, σ = %g): train-by-train's test error ‖w_T − w*‖² is ≥ 1.10 × " ..
      "train-by-validation's"):format(few.sigma),
      ("%.4g vs %.4g (ratio %.3g)"):format(e_tt, e_tv, e_tt / e_tv), e_tt >= 1.10 * e_tv),
    report.criterion("In every setting, train-by-validation's test error is ≤ 1.10 × the grid-best test error",
      ("worst ratio %.3f (n = %d, σ = %g) over %d settings"):format(worst, worst_r.n, worst_r.sigma, #C.all_rows),
      worst <= 1.10),
    report.criterion(("Many samples (n = %g d, σ = %g): the two test errors are within 10%% of each other (max/min " ..
      "≤ 1.10)"):format(
      big.n / C.d, big.sigma),
      ("tbt %.4g, tbv %.4g, best %.4g (max/min %.3f)"):format(b_tt, b_tv, big.err[big.k_best], q), q <= 1.10),
    report.criterion(("Few noisy samples (n = d/2, σ = %g): train-by-validation's test error is below ‖w*‖² = 1 " ..
      "(the theory's bound; the zero predictor has error 1)"):format(few.sigma),
      ("%.4g"):format(e_tv), e_tv < 1),
  }
end

local function evidence(C)
  local etas, d, list = C.etas, C.d, {}
  for _, r in ipairs(C.sig_rows) do
    list[#list + 1] = ("n = d/2 = %d, σ = %g: η tbt = %s, tbv = %s, best = %s; test error ‖w_T − w*‖² " ..
      "tbt %.3g ± %.2g, tbv %.3g ± %.2g, best %.3g ± %.2g (σ² = %.3g)"):format(r.n, r.sigma, fmt_eta(etas[r.k_tt]),
      fmt_eta(etas[r.k_tv]), fmt_eta(etas[r.k_best]), r.err[r.k_tt], r.err_se[r.k_tt], r.err[r.k_tv],
      r.err_se[r.k_tv], r.err[r.k_best], r.err_se[r.k_best], r.sigma ^ 2)
  end
  for _, r in ipairs(C.n_rows) do
    list[#list + 1] = ("σ = %g, n = %g d = %d: η tbt = %s, tbv = %s, best = %s; test error tbt %.3g ± %.2g, " ..
      "tbv %.3g ± %.2g, best %.3g ± %.2g (OLS dσ²/(n−d−1) = %s)"):format(r.sigma, r.n / d, r.n,
      fmt_eta(etas[r.k_tt]), fmt_eta(etas[r.k_tv]), fmt_eta(etas[r.k_best]), r.err[r.k_tt], r.err_se[r.k_tt],
      r.err[r.k_tv], r.err_se[r.k_tv], r.err[r.k_best], r.err_se[r.k_best],
      r.n > d + 1 and ("%.3g"):format(d * r.sigma ^ 2 / (r.n - d - 1)) or "∞")
  end
  local hw, hr = worst_ratio(C, "half")
  list[#list + 1] = ("Secondary protocol, GD on n/2 fresh samples (the training size train-by-validation " ..
    "tuned for): train-by-validation's error / grid-best error ≤ %.3f in all %d settings (worst at n = %d, σ = " ..
      "%g)."):format(
    hw, #C.all_rows, hr.n, hr.sigma)
  list[#list + 1] = ("Fast path vs the library's unroll: max relative discrepancy %.2e over %d (task, η) " ..
    "comparisons (train and validation meta-objectives through ms.meta.value, test iterates through " ..
      "ms.meta.unroll)."):format(
    C.check.max_rel, C.check.count)
  list[#list + 1] = ("CPU time of this experiment: %.1f s."):format(os.clock() - C.clock0)
  return list
end

-- How the test error is measured, and why train-by-validation sits a little below the best eta.
local function notes(C)
  local worst = worst_ratio(C, "err")
  local hw = worst_ratio(C, "half")
  return "The test error reported is ‖w_T − w*‖², the excess test risk ×2 (the population test loss is " ..
    "(‖w_T − w*‖² + σ²)/2); RMSE is measured on fresh samples and includes the noise σ. Both meta-objectives' " ..
    "step sizes are tested the same way, by GD on n fresh samples (the protocol of docs/paper.md). " ..
    "Train-by-validation tunes η for GD on n/2 training samples, and the best η for n/2 samples is smaller " ..
    "than for n samples (with fewer samples, fitting the noise starts to hurt sooner), so its η sits " ..
    "typically one or two grid points below " ..
    ("the best η for n samples and its error up to %.1f%% above the grid-best; tested on n/2 samples " ..
    "(columns '(n/2)' of the table) it is within %.1f%% of that protocol's grid-best. "):format(
    100 * (worst - 1), 100 * (hw - 1)) ..
    "The eigenbasis fast path replaces 25 unrolls per task by one eigendecomposition of XᵀX/n; it is exact " ..
    "up to rounding, as the cross-check criterion shows."
end

--- The report section: claim, settings, evidence, criteria, figures, table and notes.
function M.describe(C, cfg)
  local paper, S = SIZES.full, C.S
  return {
    claim = "With few noisy samples (n a constant fraction of d, large σ) tuning GD's step size on the training " ..
      "loss (train-by-train) picks a large η that fits the noise and tests worse than tuning on a validation " ..
      "split (train-by-validation), whose η is near the best possible; with n ≫ d both meta-objectives give " ..
      "good step sizes.",
    settings = ("Mode %s: d = %d (paper %d); w* uniform on the unit sphere, x ~ N(0, I_d), y = <w*, x> + N(0, σ²); " ..
      "loss ½ mean (y − <w, x>)²; GD from w = 0 for T = %d steps, a run frozen at norm %dσ once it reaches it; " ..
      "η from a grid of %d values log-spaced in [1e-6, 1]; meta-objective averaged over m = %d tasks (paper %d); " ..
      "train-by-train on n samples, train-by-validation on n/2 + n/2; σ sweep at n = d/2 = %d (σ ∈ {%s}); " ..
      "n sweep at σ = %g with n/d ∈ {%s}; test on %d fresh tasks (paper %d): GD with the chosen η on n fresh " ..
      "samples, error ‖w_T − w*‖² and RMSE on %d fresh samples. Tasks share X, w* and the standardized noise " ..
      "across σ (common random numbers). Best η: the grid point with the smallest mean test error on the same " ..
      "test tasks. η ranges: 10–90%% quantiles of the choice over %d bootstrap resamples of the m tasks."):format(
      cfg.mode, C.d, paper.d, T, FREEZE, NGRID, C.m, paper.m, C.n_sigma, table.concat(C.sig_of[C.n_sigma], ", "),
      N_SIGMA, table.concat(S.ratios, ", "), S.test_tasks, paper.test_tasks, S.test_samples, S.boot),
    evidence = evidence(C),
    criteria = criteria(C),
    figures = figures(C),
    tables = {{title = "Chosen step sizes and test errors (mean ± standard error over test tasks)",
      file = "exp4_table.csv", markdown = table_md(C)}},
    notes = notes(C),
  }
end

return M
