-- Experiment 5: learned neural optimizers, train-by-train vs train-by-validation (paper, Section 6
-- and its open questions). A per-parameter MLP optimizer (after Metz et al. 2019; ms.optim.learned_mlp)
-- is meta-trained by truncated back-propagation through unrolls of an MLP classifier's training
-- (mini-batches, fresh tasks: random subsets of n images and a fresh initialisation), on the mean
-- training loss over the unroll (train-by-train, n = 1000 and n = 2000) or on the mean validation
-- loss (train-by-validation, 1000 + 1000). Each learned optimizer, SGD with its step size tuned on
-- validation loss and Adam with tuned step size then train fresh 1000-sample tasks for longer than
-- the meta-training horizon; train and test accuracy and loss are recorded along the way. The same
-- again with 20% label noise. Last, the meta-gradient norms over meta-training for the naive
-- (loss at w_T) and log ((1/T) log loss at w_T) meta-objectives, and the share of non-finite ones.
--
-- The module is shared by scripts/reproduce.lua (modes quick and default) and
-- scripts/learned_optimizer.lua (modes quick, long and full): SIZES says what each mode runs.
local report = require "lib.report"

local M = {title = "Neural optimizers: train-by-train vs train-by-validation"}

-- Sizes per mode. The paper's (full): 784-100-20-10, batches of 32, unrolls of 50-150 steps
-- (here 100), 100 tasks, 4000 test steps, 5 runs. The scaled modes keep n = 1000 / 2000 / 1000 + 1000
-- and the mini-batch size, and shrink the network (images average-pooled 2x2 to 14x14), the
-- unrolls, the number of meta-iterations, the test horizon and the runs.
local SIZES = {
  quick = {synthetic = true, side = 8, pool = 2400, test_n = 600, layers = {64, 16, 10},
           n_small = 100, n_large = 200, n_valid = 100, batch = 16, T = 8, segments = 3, iterations = 9,
           meta_lr = 3e-3, clip = 1, test_steps = 48, every = 8, runs = 1,
           sgd_grid = {0.03, 0.1, 0.3, 1}, adam_grid = {1e-3, 3e-3, 1e-2, 3e-2}, tune_steps = 24,
           grad_T = 16, grad_iters = 4, noise = {0, 0.2}},
  default = {pool_side = 14, pool = 20000, test_n = 2000, layers = {196, 32, 10},
             n_small = 1000, n_large = 2000, n_valid = 1000, batch = 32, T = 20, segments = 5, iterations = 40,
             meta_lr = 1e-2, clip = 1, test_steps = 400, every = 20, runs = 2,
             sgd_grid = {0.01, 0.03, 0.1, 0.3, 1}, adam_grid = {3e-4, 1e-3, 3e-3, 1e-2, 3e-2}, tune_steps = 200,
             grad_T = 60, grad_iters = 8, noise = {0, 0.2}},
  long = {pool_side = 14, pool = 60000, test_n = 10000, layers = {196, 64, 10},
          n_small = 1000, n_large = 2000, n_valid = 1000, batch = 32, T = 25, segments = 8, iterations = 150,
          meta_lr = 1e-2, clip = 1, test_steps = 1200, every = 40, runs = 3,
          sgd_grid = {0.01, 0.03, 0.1, 0.3, 1}, adam_grid = {3e-4, 1e-3, 3e-3, 1e-2, 3e-2}, tune_steps = 600,
          grad_T = 100, grad_iters = 12, noise = {0, 0.2}},
  full = {pool = 60000, test_n = 10000, layers = {784, 100, 20, 10},
          n_small = 1000, n_large = 2000, n_valid = 1000, batch = 32, T = 100, segments = 10, iterations = 1000,
          checkpoint = 10, meta_lr = 1e-2, clip = 1, test_steps = 4000, every = 100, runs = 5,
          sgd_grid = {0.003, 0.01, 0.03, 0.1, 0.3, 1}, adam_grid = {1e-4, 3e-4, 1e-3, 3e-3, 1e-2},
          tune_steps = 4000, grad_T = 150, grad_iters = 40, noise = {0, 0.2}},
}
M.SIZES = SIZES

-- The optimizers compared, in table order.
local NAMES = {"tbt_small", "tbt_large", "tbv", "sgd", "adam"}
local LABELS = {tbt_small = "learned, train-by-train n=%d", tbt_large = "learned, train-by-train n=%d",
                tbv = "learned, train-by-validation %d+%d", sgd = "SGD, tuned step size",
                adam = "Adam (full batch), tuned step size"}

local function label(S, name)
  if name == "tbt_small" then return LABELS[name]:format(S.n_small) end
  if name == "tbt_large" then return LABELS[name]:format(S.n_large) end
  if name == "tbv" then return LABELS[name]:format(S.n_small, S.n_valid) end
  return LABELS[name]
end

-- ---------------------------------------------------------------- data and tasks

-- 2x2 average pooling of 28x28 images as one matrix product: [784, 196].
local function pool_matrix(ms)
  local rows = {}
  for r = 0, 27 do
    for c = 0, 27 do
      local row = {}
      for k = 1, 196 do row[k] = 0 end
      row[(r // 2) * 14 + c // 2 + 1] = 0.25
      rows[#rows + 1] = row
    end
  end
  return ms.tensor(rows)
end

--- The image pool tasks are drawn from and the test set: {X, y, test_X, test_y}.
function M.load_data(ms, S, seed)
  if S.synthetic then
    local X, y = ms.data.synthetic{seed = seed, n = S.pool + S.test_n, side = S.side, classes = 10}
    local split = ms.data.task{images = X, labels = y, n_train = S.pool, n_valid = S.test_n, seed = seed}
    return {X = split.X, y = split.y, test_X = split.X_valid, test_y = split.y_valid, source = "synthetic"}
  end
  local X, y = ms.data.fashion_mnist{split = "train"}
  if not X then
    error("experiment 5 needs Fashion-MNIST: install the Debian package dataset-fashion-mnist (" .. y .. ")", 0)
  end
  local tX, ty = ms.data.fashion_mnist{split = "test"}
  if not tX then error("experiment 5: " .. ty, 0) end
  if S.pool < X:shape()[1] then X, y = X:slice(1, 1, S.pool), y:slice(1, 1, S.pool) end
  if S.test_n < tX:shape()[1] then tX, ty = tX:slice(1, 1, S.test_n), ty:slice(1, 1, S.test_n) end
  if S.pool_side then
    local P = pool_matrix(ms)
    X, tX = ms.matmul(X, P), ms.matmul(tX, P)
  end
  return {X = X, y = y, test_X = tX, test_y = ty, source = "Fashion-MNIST"}
end

--- A task: n training images (and nv validation images) with label noise p, a fresh initialisation.
local function make_task(ms, S, D, n, nv, p, seed)
  local t = ms.data.task{images = D.X, labels = D.y, n_train = n, n_valid = nv, label_noise = p, seed = seed}
  return {
    objective = ms.objective.mlp{layers = S.layers, X = t.X, y = t.y},
    valid_objective = nv > 0 and ms.objective.mlp{layers = S.layers, X = t.X_valid, y = t.y_valid} or nil,
    w0 = ms.nn.mlp_init(S.layers, {seed = seed}),
    X = t.X, y = t.y,
  }
end

-- ---------------------------------------------------------------- meta-training

local function grad_norm(ms, rec)
  local s = 0
  for _, g in pairs(rec.grad) do s = s + ms.sum(ms.square(g)):item() end
  return math.sqrt(s)
end

--- Meta-trains a learned MLP optimizer; returns its theta and the history rows {k, value, norm, status}.
local function meta_train(ms, S, D, cfg, c)
  local opt = ms.optim.learned_mlp{seed = cfg.seed, batch = S.batch, batch_seed = cfg.seed}
  local drawn = 0
  local meter = report.meter(cfg.progress, c.what, c.iterations or S.iterations, 10)
  local rows = {}
  local res = ms.meta.train{
    sample = function()
      drawn = drawn + 1
      return make_task(ms, S, D, c.n, c.nv, c.p, c.seed0 + drawn)
    end,
    optimizer = opt, steps = c.T or S.T, meta = c.meta, checkpoint = S.checkpoint,
    iterations = c.iterations or S.iterations, segments = c.segments or S.segments,
    meta_optimizer = "rmsprop", meta_lr = S.meta_lr, schedule = "constant", clip = S.clip,
    on_failure = "skip", progress = false,
    callback = function(k, rec)
      local ok = rec.status == "ok"
      rows[#rows + 1] = {k, rec.value, ok and grad_norm(ms, rec) or 0 / 0, rec.status}
      meter:step(k, ("meta-loss %s"):format(report.fmt(rec.value)))
    end,
  }
  return res.theta, rows
end

-- ---------------------------------------------------------------- evaluation

--- Trains task with opt for S.test_steps steps (in pieces of S.every, continuing the run) and
-- records {step, train loss, train acc, test loss, test acc} at step 0 and after every piece.
local function evaluate(ms, S, D, opt, task)
  local curve = {}
  local function record(t, w)
    curve[#curve + 1] = {t, task.objective:value(w):item(), ms.nn.mlp_accuracy(S.layers, w, task.X, task.y),
                         D.test_obj:value(w):item(), ms.nn.mlp_accuracy(S.layers, w, D.test_X, D.test_y)}
  end
  record(0, task.w0)
  local start
  for t = S.every, S.test_steps, S.every do
    local traj = ms.meta.unroll{objective = task.objective, optimizer = opt, w0 = task.w0, steps = S.every,
                                start = start}
    if traj.status ~= "ok" then
      -- a diverged run: the rest of its curve is the chance level it fell to
      for s = t, S.test_steps, S.every do curve[#curve + 1] = {s, 0 / 0, 0.1, 0 / 0, 0.1} end
      return curve, false
    end
    start = traj.stop
    record(t, traj.w_T)
  end
  return curve, true
end

--- The step size of `make(lr)` with the lowest validation loss after S.tune_steps steps.
local function tune(ms, S, D, p, grid, make, seed0)
  local best, best_v, values = nil, math.huge, {}
  for i, lr in ipairs(grid) do
    local v = 0
    for r = 1, 1 do
      local task = make_task(ms, S, D, S.n_small, S.n_valid, p, seed0 + r)
      local val, status = ms.meta.value{task = task, optimizer = make(lr), steps = S.tune_steps, meta = "valid"}
      v = v + (status == "ok" and val or math.huge)
    end
    values[i] = v
    if v < best_v then best, best_v = lr, v end
  end
  return best or grid[1], values
end

-- One noise level: meta-train the three learned optimizers, tune the baselines, test them all.
local function compare(ms, S, D, cfg, p, slot)
  local base = 1000000 * slot + 1000 * cfg.seed
  local confs = {
    tbt_small = {n = S.n_small, nv = 0, meta = "sum"},
    tbt_large = {n = S.n_large, nv = 0, meta = "sum"},
    tbv = {n = S.n_small, nv = S.n_valid, meta = "valid_sum"},
  }
  local out = {p = p, opts = {}, meta_rows = {}, lr = {}, tune = {}}
  for i, name in ipairs{"tbt_small", "tbt_large", "tbv"} do
    local c = confs[name]
    c.p, c.seed0, c.what = p, base + 100000 * i, ("p=%g %s"):format(p, name)
    local theta, rows = meta_train(ms, S, D, cfg, c)
    out.meta_rows[name] = rows
    out.opts[name] = ms.optim.learned_mlp{seed = cfg.seed, batch = S.batch, batch_seed = cfg.seed, theta = theta}
    out.theta = out.theta or {}
    out.theta[name] = theta
  end
  local sgd = function(lr) return ms.optim.sgd{lr = lr, batch = S.batch, seed = cfg.seed} end
  local adam = function(lr) return ms.optim.adam{lr = lr} end
  out.lr.sgd, out.tune.sgd = tune(ms, S, D, p, S.sgd_grid, sgd, base + 500000)
  out.lr.adam, out.tune.adam = tune(ms, S, D, p, S.adam_grid, adam, base + 500000)
  out.opts.sgd, out.opts.adam = sgd(out.lr.sgd), adam(out.lr.adam)
  cfg.progress("p=%g: tuned SGD lr %g, Adam lr %g", p, out.lr.sgd, out.lr.adam)
  -- the same fresh test tasks for every optimizer
  out.curves, out.diverged = {}, {}
  for _, name in ipairs(NAMES) do
    out.curves[name], out.diverged[name] = {}, 0
    for r = 1, S.runs do
      local task = make_task(ms, S, D, S.n_small, 0, p, base + 900000 + r)
      local curve, ok = evaluate(ms, S, D, out.opts[name], task)
      out.curves[name][r] = curve
      if not ok then out.diverged[name] = out.diverged[name] + 1 end
    end
  end
  out.opts = nil -- handles are not data
  return out
end

-- Mean over runs of column col of the curves at each recorded step.
local function mean_curve(curves, col)
  local out = {}
  for i = 1, #curves[1] do
    local s = 0
    for r = 1, #curves do s = s + curves[r][i][col] end
    out[i] = s / #curves
  end
  return out
end

--- Meta-gradient norms of the naive and log meta-objectives over meta-training (train-by-train).
local function grad_study(ms, S, D, cfg)
  local out = {}
  for i, meta in ipairs{"naive", "log"} do
    local _, rows = meta_train(ms, S, D, cfg, {n = S.n_small, nv = 0, p = 0, meta = meta, T = S.grad_T,
      iterations = S.grad_iters, segments = 1, seed0 = 7000000 + 1000 * cfg.seed + 100 * i,
      what = "meta-gradient norms, " .. meta})
    out[meta] = rows
  end
  return out
end

--- Runs everything for cfg.mode (quick / default / long / full); returns numbers only.
function M.measure(cfg, ms)
  local S = SIZES[cfg.mode] or error("experiment 5: unknown mode " .. tostring(cfg.mode))
  local t0 = os.time()
  local D = M.load_data(ms, S, cfg.seed)
  D.test_obj = ms.objective.mlp{layers = S.layers, X = D.test_X, y = D.test_y}
  local data = {mode = cfg.mode, S = S, source = D.source, seed = cfg.seed, levels = {}}
  for slot, p in ipairs(S.noise) do data.levels[slot] = compare(ms, S, D, cfg, p, slot) end
  data.grad = grad_study(ms, S, D, cfg)
  data.seconds = os.time() - t0
  return data
end

-- ---------------------------------------------------------------- summaries

-- Final-step means over runs per optimizer: {train_loss, train_acc, test_loss, test_acc}.
local function finals(level, name)
  local curves = level.curves[name]
  local last = #curves[1]
  local m = {0, 0, 0, 0}
  for r = 1, #curves do
    for c = 2, 5 do m[c - 1] = m[c - 1] + curves[r][last][c] / #curves end
  end
  return {train_loss = m[1], train_acc = m[2], test_loss = m[3], test_acc = m[4],
          start_loss = curves[1][1][2]}
end

local function spread(rows)
  local lo, hi, bad = math.huge, 0, 0
  for _, r in ipairs(rows) do
    if r[4] == "ok" and r[3] > 0 then lo, hi = math.min(lo, r[3]), math.max(hi, r[3]) else bad = bad + 1 end
  end
  return lo, hi, bad / math.max(#rows, 1)
end

local function pname(p) return ("p%02d"):format(math.floor(100 * p + 0.5)) end

--- Writes the CSV files and figures of experiment 5.
function M.write(data, cfg, ms)
  local S = data.S
  local rows = {}
  for _, level in ipairs(data.levels) do
    for _, name in ipairs(NAMES) do
      local f = finals(level, name)
      rows[#rows + 1] = {level.p, name, f.train_loss, f.train_acc, f.test_loss, f.test_acc,
                         f.train_acc - f.test_acc, level.lr[name] or "", level.diverged[name]}
    end
    -- accuracy over inner steps
    local crow, series = {}, {}
    local steps = {}
    for i, pt in ipairs(level.curves[NAMES[1]][1]) do steps[i] = pt[1] end
    local header = {"step"}
    for _, name in ipairs(NAMES) do
      header[#header + 1] = name .. "_train_acc"
      header[#header + 1] = name .. "_test_acc"
      header[#header + 1] = name .. "_train_loss"
      header[#header + 1] = name .. "_test_loss"
    end
    local means, train_series = {}, {}
    for _, name in ipairs(NAMES) do
      means[name] = {mean_curve(level.curves[name], 3), mean_curve(level.curves[name], 5),
                     mean_curve(level.curves[name], 2), mean_curve(level.curves[name], 4)}
      local learned = name ~= "sgd" and name ~= "adam"
      series[#series + 1] = {x = steps, y = means[name][2], label = label(S, name), dash = not learned}
      train_series[#train_series + 1] = {x = steps, y = means[name][1], label = label(S, name), dash = not learned}
    end
    for i = 1, #steps do
      local row = {steps[i]}
      for _, name in ipairs(NAMES) do
        for c = 1, 4 do row[#row + 1] = means[name][c][i] end
      end
      crow[i] = row
    end
    report.csv(ms, cfg.out, ("exp5_curves_%s.csv"):format(pname(level.p)), header, crow)
    for _, which in ipairs{"test", "train"} do
      report.figure(ms, cfg.out, {file = ("exp5_%s_acc_%s.png"):format(which, pname(level.p)),
        title = ("%s accuracy over inner steps, label noise %g%% (mean of %d runs)"):format(
          which == "test" and "Test" or "Training", 100 * level.p, S.runs),
        xlabel = "inner step", ylabel = which .. " accuracy", key = "bottom right",
        series = which == "test" and series or train_series,
        vlines = {{x = S.T * S.segments, label = "meta-training horizon"}}})
    end
    -- meta-training curves
    local mrows = {}
    for _, name in ipairs{"tbt_small", "tbt_large", "tbv"} do
      for _, r in ipairs(level.meta_rows[name]) do mrows[#mrows + 1] = {name, r[1], r[2], r[3], r[4]} end
    end
    report.csv(ms, cfg.out, ("exp5_meta_train_%s.csv"):format(pname(level.p)),
      {"optimizer", "iteration", "meta_loss", "meta_grad_norm", "status"}, mrows)
  end
  report.csv(ms, cfg.out, "exp5_table.csv",
    {"label_noise", "optimizer", "train_loss", "train_acc", "test_loss", "test_acc", "gap", "lr", "diverged"}, rows)
  -- meta-gradient norms, naive vs log
  local grows, series = {}, {}
  for _, meta in ipairs{"naive", "log"} do
    local x, y = {}, {}
    for _, r in ipairs(data.grad[meta]) do
      grows[#grows + 1] = {meta, r[1], r[2], r[3], r[4]}
      x[#x + 1], y[#y + 1] = r[1], r[3]
    end
    series[#series + 1] = {x = x, y = y, label = meta .. " meta-objective"}
  end
  report.csv(ms, cfg.out, "exp5_grad_norms.csv", {"meta", "iteration", "meta_loss", "meta_grad_norm", "status"},
    grows)
  report.figure(ms, cfg.out, {file = "exp5_grad_norms.png",
    title = ("Meta-gradient norm over meta-training (learned MLP optimizer, T = %d)"):format(S.grad_T),
    xlabel = "meta-iteration", ylabel = "|meta-gradient| (log scale)", logy = true, key = "top right",
    series = series})
end

-- ---------------------------------------------------------------- the section

--- The report section: claim, settings, evidence, criteria, tables and figures.
function M.describe(data)
  local S = data.S
  local F = {}
  for i, level in ipairs(data.levels) do
    F[i] = {}
    for _, name in ipairs(NAMES) do F[i][name] = finals(level, name) end
  end
  local clean, noisy = F[1], F[2]
  local tables = {}
  for i, level in ipairs(data.levels) do
    local rows = {}
    for _, name in ipairs(NAMES) do
      local f = F[i][name]
      rows[#rows + 1] = {label(S, name), report.pct(f.train_acc), report.pct(f.test_acc), report.fmt(f.train_loss),
                         report.fmt(f.test_loss), report.pct(f.train_acc - f.test_acc),
                         level.lr[name] and report.fmt(level.lr[name], 3) or "learned",
                         level.diverged[name]}
    end
    tables[#tables + 1] = {title = ("Label noise %g%%: after %d inner steps on fresh %d-sample tasks (mean of %d runs)")
      :format(100 * level.p, S.test_steps, S.n_small, S.runs), file = "exp5_table.csv",
      markdown = report.md_table({"optimizer", "train acc", "test acc", "train loss", "test loss", "gap",
                                  "step size", "diverged"}, rows)}
  end
  local nlo, nhi, nbad = spread(data.grad.naive)
  local llo, lhi, lbad = spread(data.grad.log)
  local function decades(lo, hi) return hi > 0 and lo < math.huge and math.log(hi / lo, 10) or 0 / 0 end
  local adv0 = clean.tbv.test_acc - clean.tbt_small.test_acc
  local adv2 = noisy.tbv.test_acc - noisy.tbt_small.test_acc
  local gap_tbt, gap_tbv = clean.tbt_small.train_acc - clean.tbt_small.test_acc,
                           clean.tbv.train_acc - clean.tbv.test_acc
  local all_train = true
  for i = 1, #F do
    for _, name in ipairs(NAMES) do
      local f = F[i][name]
      if not (f.train_loss < f.start_loss) then all_train = false end
    end
  end
  local criteria = {
    report.criterion(("n = %d, no noise: train-by-validation tests at least as well as train-by-train " ..
      "(test accuracy)"):format(S.n_small),
      ("%s vs %s"):format(report.pct(clean.tbv.test_acc), report.pct(clean.tbt_small.test_acc)), adv0 >= 0),
    report.criterion("n = " .. S.n_small .. ", no noise: train-by-train overfits more (train acc - test acc larger " ..
      "than train-by-validation's)", ("%s vs %s"):format(report.pct(gap_tbt), report.pct(gap_tbv)), gap_tbt > gap_tbv),
    report.criterion("with 20% label noise the test-accuracy advantage of train-by-validation over " ..
      "train-by-train widens", ("%s (noise) vs %s (clean)"):format(report.pct(adv2), report.pct(adv0)), adv2 > adv0),
    report.criterion("every optimizer trains (final training loss below the initial one, both noise levels)",
      all_train and "yes" or "no", all_train),
    report.criterion("log meta-objective: no more non-finite meta-gradients than naive, and norms spread over " ..
      "no more decades", ("non-finite %s vs %s; %s vs %s decades"):format(report.pct(lbad), report.pct(nbad),
        report.fmt(decades(llo, lhi), 3), report.fmt(decades(nlo, nhi), 3)),
      lbad <= nbad and not (decades(llo, lhi) > decades(nlo, nhi))),
  }
  local how = {
    quick = "--quick: synthetic 8x8 images (ms.data.synthetic), a 64-16-10 network, n = 100 / 200 / 100 + 100",
    default = "default (scaled down to a few minutes on 2 cores): Fashion-MNIST average-pooled 2x2 to 14x14, " ..
      "a 196-32-10 network, a pool of 20000 training images and 2000 test images",
    long = "scripts/learned_optimizer.lua default (about 20 minutes): Fashion-MNIST pooled to 14x14, a 196-64-10 " ..
      "network, all 60000 training and 10000 test images",
    full = "--full (the paper's settings): Fashion-MNIST 28x28, a 784-100-20-10 network, 60000 / 10000 images",
  }
  local settings = ("%s. Learned MLP optimizer (hidden 32, seed %d) meta-trained with RMSProp (meta step %g, " ..
    "clip %g) for %d meta-iterations of %d-step unrolls, each task's inner run continued over %d segments " ..
    "(horizon %d steps; truncated back-propagation through time), one task per iteration, mini-batches of %d; " ..
    "meta-objective the mean training loss over the unroll (train-by-train) or the mean validation loss " ..
    "(train-by-validation). SGD (mini-batches of %d) and Adam (full batch) step sizes chosen from %d-value " ..
    "grids by the validation loss after %d steps. Test: %d fresh tasks of %d images each, %d inner steps, " ..
    "test set of %d images. Meta-gradient norms: %d meta-iterations at T = %d. %d s in all."):format(
    how[data.mode] or data.mode, data.seed, S.meta_lr, S.clip, S.iterations, S.T, S.segments, S.T * S.segments,
    S.batch, S.batch, #S.sgd_grid, S.tune_steps, S.runs, S.n_small, S.test_steps, S.test_n, S.grad_iters, S.grad_T,
    data.seconds or 0)
  return {
    claim = "With few samples a neural optimizer meta-trained on the training loss (train-by-train) overfits, " ..
      "while meta-training on a validation split (train-by-validation) generalises better; with label noise the " ..
      "gap widens (paper, Section 6). Open question: can the explosion of meta-gradients be alleviated for " ..
      "neural optimizers?",
    settings = settings,
    evidence = {
      ("No noise, test accuracy: train-by-train n=%d %s, n=%d %s, train-by-validation %s, SGD %s, Adam %s."):format(
        S.n_small, report.pct(clean.tbt_small.test_acc), S.n_large, report.pct(clean.tbt_large.test_acc),
        report.pct(clean.tbv.test_acc), report.pct(clean.sgd.test_acc), report.pct(clean.adam.test_acc)),
      ("20%% label noise, test accuracy: train-by-train n=%d %s, n=%d %s, train-by-validation %s, SGD %s, " ..
        "Adam %s."):format(S.n_small, report.pct(noisy.tbt_small.test_acc), S.n_large,
        report.pct(noisy.tbt_large.test_acc), report.pct(noisy.tbv.test_acc), report.pct(noisy.sgd.test_acc),
        report.pct(noisy.adam.test_acc)),
      ("Test loss, no noise / 20%% noise: train-by-train n=%d %s / %s, train-by-validation %s / %s (not a " ..
        "criterion: reported because the accuracies alone hide it)."):format(S.n_small,
        report.fmt(clean.tbt_small.test_loss), report.fmt(noisy.tbt_small.test_loss), report.fmt(clean.tbv.test_loss),
        report.fmt(noisy.tbv.test_loss)),
      ("Meta-gradient norms over %d iterations: naive %s..%s (%s non-finite), log %s..%s (%s non-finite)."):format(
        S.grad_iters, report.fmt(nlo, 3), report.fmt(nhi, 3), report.pct(nbad), report.fmt(llo, 3),
        report.fmt(lhi, 3), report.pct(lbad)),
    },
    criteria = criteria,
    tables = tables,
    figures = {
      {file = "exp5_test_acc_p00.png", data = "exp5_curves_p00.csv",
       caption = "Test accuracy over inner steps on fresh tasks, no label noise"},
      {file = "exp5_train_acc_p00.png", data = "exp5_curves_p00.csv",
       caption = "Training accuracy over inner steps on fresh tasks, no label noise"},
      {file = "exp5_test_acc_p20.png", data = "exp5_curves_p20.csv",
       caption = "Test accuracy over inner steps on fresh tasks, 20% label noise"},
      {file = "exp5_train_acc_p20.png", data = "exp5_curves_p20.csv",
       caption = "Training accuracy over inner steps on fresh tasks, 20% label noise"},
      {file = "exp5_grad_norms.png", data = "exp5_grad_norms.csv",
       caption = "Meta-gradient norms over meta-training, naive vs log meta-objective"},
    },
    notes = ("Seed %d; %d test runs per optimizer and noise level, so differences of a few points of accuracy " ..
      "are within run-to-run variation. Not run: the paper's full-training-set comparison (50000/10000 split). " ..
      "Meta-training curves: exp5_meta_train_p00.csv, exp5_meta_train_p20.csv."):format(data.seed, S.runs),
  }
end

return M
