--- Unrolled trajectories, meta-objectives, meta-gradients and meta-training: option checking
-- and result formatting around the engine's C layer (metastep/meta.h, train.h).
--
-- A run is described by a spec table:
--   objective = obj (or task = {objective =, valid_objective =, w0 =}, or tasks = {...}),
--   optimizer = ms.optim.gd{lr = 0.1} (its theta gives the meta-parameters),
--   w0 = tensor (default: zeros), steps = T,
--   meta = "log" | "naive" | "sum" | "logsum" (on the training loss), "valid" | "valid_log" |
--   "valid_sum" | "valid_logsum" (on the task's validation objective), "train" (= naive), or
--   function(traj) -> tensor (traj = {T, losses = {[0] = f(w_0), f(w_1), ...}, loss0, w_T,
--   theta, task, status}),
--   method = "reverse" | "forward" | "exact" | "stable" | "fd",
--   truncate = K (reverse and forward: derivatives through the last K steps only: w_{T-K},
--   its loss and the optimizer state are held constant; losses f(w_t), t <= T - K, that a
--   meta-objective reads keep their full derivatives), checkpoint = K (reverse: keep every K-th
--   state and recompute between them, memory O((T/K + K) d), the same result bit for bit),
--   freeze_norm = R (a task's run is frozen once |w_t| >= R, projected to norm R),
--   theta = {...} (overrides), params = {"lr", ...} (which to differentiate), fd_step = h,
--   allow_zero_loss = true.
-- value_and_grad(spec) returns {value =, grad = {name = number or tensor}, status =, method =,
-- fail_step =, log_abs_grad = {...} (stable, exact)}: status is "ok", or "overflow",
-- "underflow", "nan" when the method could not give a faithful number (and at which step it
-- first went wrong).
local core = require "metastep.core"
local util = require "metastep.util"

local M = {}

local function is_tensor(v) return getmetatable(v) == core.Tensor_mt end

-- The built-in meta-objectives: name -> kind and the loss they read.
local BUILTIN = {
  naive = {"naive", "train"}, log = {"log", "train"}, sum = {"sum", "train"}, logsum = {"logsum", "train"},
  train = {"naive", "train"}, valid = {"naive", "valid"}, valid_log = {"log", "valid"},
  valid_sum = {"sum", "valid"}, valid_logsum = {"logsum", "valid"},
}

-- The options of value_and_grad, value and unroll; train adds its own.
local SPEC_OPTIONS = {"objective", "task", "tasks", "optimizer", "w0", "steps", "meta", "method", "truncate",
                      "checkpoint", "freeze_norm", "theta", "params", "fd_step", "allow_zero_loss",
                      "keep_iterates", "start"}
local TRAIN_OPTIONS = {"iterations", "meta_lr", "schedule", "meta_optimizer", "clip", "bounds", "on_failure",
                       "progress", "log", "callback", "sample", "batch", "every", "resume", "segments"}

-- ---------------------------------------------------------------- checking inputs

local fail = util.raise
local raise = util.raise

-- Runs an engine binding: its own messages ("metastep/meta.lua:278: mul: shapes ...") are
-- raised again at the caller's line; a callback's error object passes through unchanged.
local function engine(f, ...)
  local r = table.pack(pcall(f, ...))
  if r[1] then return table.unpack(r, 2, r.n) end
  local err = r[2]
  if type(err) == "string" then
    -- an engine message carries no position, or one inside the library: blame the caller;
    -- a message with a position of its own (a callback's error) keeps it
    local msg = err:match("^metastep/[%w_]+%.lua:%d+: (.*)$") or (not err:match("^[^\n]-:%d+: ") and err)
    if msg then fail("", "%s", msg) end
  end
  error(err, 0)
end
local function spec_error(msg, ...) fail("meta: ", msg, ...) end
local show = util.show

local function check_known(opts, lists, who)
  local set, names = {}, {}
  for _, list in ipairs(lists) do
    for _, k in ipairs(list) do set[k] = true; names[#names + 1] = k end
  end
  for k in pairs(opts) do
    if not set[k] then fail(who, "unknown option '%s'%s", tostring(k), util.suggest(k, names)) end
  end
end

local function int_option(spec, key, lo, what)
  local v = spec[key]
  if v == nil then return nil end
  if math.type(v) == nil or math.tointeger(v) == nil or v < lo then
    spec_error("'%s' must be %s, got %s", key, what, show(v))
  end
  return math.tointeger(v)
end

local function check_spec(spec, who)
  if type(spec) ~= "table" then spec_error("expected a spec table, got %s", type(spec)) end
  if who ~= "train" then check_known(spec, {SPEC_OPTIONS}, "meta: ") end
  local opt = spec.optimizer
  if type(opt) ~= "table" or type(opt.c) ~= "userdata" or type(opt.theta) ~= "table" then
    spec_error("'optimizer' must be an optimizer (ms.optim.gd{...}, ...), got %s", type(opt))
  end
  if opt._invalid then spec_error("%s", opt._invalid) end
  -- math.tointeger also rejects inf and floats beyond the integer range
  local T = type(spec.steps) == "number" and math.tointeger(spec.steps) or nil
  if not T then spec_error("'steps' must be an integer, got %s", show(spec.steps)) end
  if T < 1 then spec_error("'steps' must be >= 1, got %d", T) end
  local theta = {}
  for k, v in pairs(opt.theta) do theta[k] = v end
  if spec.theta ~= nil and type(spec.theta) ~= "table" then
    spec_error("'theta' must be a table of meta-parameter values, got %s", type(spec.theta))
  end
  for k, v in pairs(spec.theta or {}) do
    if opt.theta[k] == nil then
      spec_error("unknown meta-parameter '%s' (optimizer '%s' has %s)", tostring(k), opt.name,
                 #opt.params > 0 and table.concat(opt.params, ", ") or "none")
    end
    theta[k] = v
  end
  for k, v in pairs(theta) do
    if type(v) ~= "number" and not is_tensor(v) then
      spec_error("meta-parameter '%s' must be a number, got %s", k, type(v))
    end
    if type(v) == "number" and (v ~= v or v == math.huge or v == -math.huge) then
      spec_error("meta-parameter '%s' must be finite, got %s", k, show(v))
    end
  end
  local meta = spec.meta or "log"
  if type(meta) == "string" and not BUILTIN[meta] then
    spec_error("unknown meta-objective '%s' (expected naive, log, sum, logsum, train, valid or a function)", meta)
  elseif type(meta) ~= "string" and type(meta) ~= "function" then
    spec_error("'meta' must be a name or a function of the trajectory, got %s", type(meta))
  end
  if spec.truncate ~= nil then int_option(spec, "truncate", 1, "an integer number of steps >= 1") end
  if spec.checkpoint ~= nil then int_option(spec, "checkpoint", 1, "an integer number of steps >= 1") end
  if spec.freeze_norm ~= nil and (type(spec.freeze_norm) ~= "number" or not (spec.freeze_norm > 0)
                                  or spec.freeze_norm == math.huge) then
    spec_error("'freeze_norm' must be a finite number > 0, got %s", show(spec.freeze_norm))
  end
  if spec.fd_step ~= nil and (type(spec.fd_step) ~= "number" or not (spec.fd_step > 0)
                              or spec.fd_step == math.huge) then
    spec_error("'fd_step' must be a finite number > 0, got %s", show(spec.fd_step))
  end
  if spec.params ~= nil then
    if type(spec.params) ~= "table" then
      spec_error("'params' must be a list of meta-parameter names, got %s", type(spec.params))
    end
    for _, k in ipairs(spec.params) do
      if theta[k] == nil then spec_error("unknown meta-parameter '%s'", tostring(k)) end
    end
  end
  return theta, T, meta
end

-- The tasks of a spec: {objective, w0, task} entries.
local function tasks_of(spec)
  local list = {}
  local function add(task, obj, w0)
    if getmetatable(obj) ~= core.Objective_mt then -- (indexing a released tensor would raise)
      spec_error("'objective' must be an objective (ms.objective.quadratic(H), ...), got %s", type(obj))
    end
    if w0 ~= nil and not is_tensor(w0) then spec_error("'w0' must be a tensor, got %s", type(w0)) end
    if w0 then
      local s, d = w0:shape(), obj:dim()
      if #s ~= 1 or s[1] ~= d then
        spec_error("'w0' has shape [%s] but the objective has dimension %d", table.concat(s, ","), d)
      end
    end
    list[#list + 1] = {objective = obj, w0 = w0, task = task, valid = task and task.valid_objective}
  end
  if spec.tasks then
    if type(spec.tasks) ~= "table" or #spec.tasks == 0 then spec_error("'tasks' must be a non-empty list of tasks") end
    for i, task in ipairs(spec.tasks) do
      if type(task) ~= "table" then spec_error("'tasks' entry %d must be a task table, got %s", i, type(task)) end
      add(task, task.objective, task.w0 or spec.w0)
    end
  elseif spec.task then
    if type(spec.task) ~= "table" then spec_error("'task' must be a task table, got %s", type(spec.task)) end
    add(spec.task, spec.task.objective, spec.task.w0 or spec.w0)
  else
    add(nil, spec.objective, spec.w0)
  end
  return list
end

-- Parameters to differentiate, in the optimizer's order, and their 1-based indices.
local function selection(opt, spec)
  if not spec.params then return opt.params, nil end
  local index = {}
  for i, k in ipairs(opt.params) do index[k] = i end
  local names, sel = {}, {}
  for _, k in ipairs(spec.params) do
    names[#names + 1] = k
    sel[#sel + 1] = index[k]
  end
  return names, sel
end

local function methods_ok(method)
  return method == "reverse" or method == "forward" or method == "exact" or method == "stable" or method == "fd"
end

-- The normalized table the C binding reads.
local function engine_spec(spec, theta, T, meta, entries, method, values_only)
  local opt = spec.optimizer
  local th = {}
  for i, k in ipairs(opt.params) do
    local v = theta[k]
    th[i] = is_tensor(v) and v or core.tensor(v)
  end
  local _, sel = selection(opt, spec)
  local tasks, hosts = {}, {}
  for i, e in ipairs(entries) do
    tasks[i] = {objective = e.objective, valid = e.valid, w0 = e.w0}
    hosts[i] = e.task or false
  end
  local c = {optimizer = opt.c, tasks = tasks, hosts = hosts, steps = T, method = method, theta = th,
             select = sel, truncate = spec.truncate, checkpoint = spec.checkpoint,
             freeze_norm = spec.freeze_norm, fd_step = spec.fd_step, allow_zero_loss = spec.allow_zero_loss}
  if type(meta) == "function" then
    local differentiating = not values_only and (method == "reverse" or method == "forward")
    c.kind, c.on, c.name = "custom", "train", "function"
    c.fn = function(traj)
      local named = {}
      for i, k in ipairs(opt.params) do named[k] = traj.theta_list[i] end
      traj.theta = named
      if traj.task == false then traj.task = nil end
      local v = meta(traj)
      if type(v) == "number" then
        if differentiating then
          raise("", "%s", "meta: the meta-objective returned a Lua number, which carries no derivative; " ..
                "return a tensor computed from traj.losses or traj.w_T (a number from :item() is cut off " ..
                "from the trajectory)")
        end
        v = core.tensor(v)
      end
      if not is_tensor(v) or v:numel() ~= 1 then
        raise("", "meta: the meta-objective must return a number or a one-element tensor, got %s",
          is_tensor(v) and ("shape [" .. table.concat(v:shape(), ",") .. "]") or type(v))
      end
      return v
    end
  else
    c.kind, c.on = BUILTIN[meta][1], BUILTIN[meta][2]
  end
  return c
end

-- Domain errors of the stable and exact methods, in the words of the front library.
local function check_method_domain(spec, method, meta, entries)
  if method ~= "exact" and method ~= "stable" then return end
  local opt = spec.optimizer
  local allowed = method == "exact" and {gd = true, "gd"} or
                  {gd = true, momentum = true, nesterov = true, "gd", "momentum", "nesterov"}
  if not allowed[opt.kind] then
    spec_error("method '%s' handles the optimizers %s, got %s", method, table.concat(allowed, ", "), opt.kind)
  end
  local metas = method == "exact" and {naive = true, log = true, train = true, "naive", "log"} or
                {naive = true, log = true, sum = true, logsum = true, train = true, valid = true, valid_log = true,
                 valid_sum = true, valid_logsum = true, "naive", "log", "sum", "logsum", "valid", "valid_log",
                 "valid_sum", "valid_logsum"}
  if type(meta) ~= "string" or not metas[meta] then
    spec_error("method '%s' handles the meta-objectives %s, got %s", method, table.concat(metas, ", "),
               type(meta) == "function" and "a function" or tostring(meta))
  end
  if method == "exact" and opt.schedule then spec_error("method 'exact' does not handle step-size schedules") end
  if spec.truncate then spec_error("method '%s' does not handle truncation", method) end
  if spec.freeze_norm then spec_error("method '%s' does not handle freeze_norm", method) end
  for _, e in ipairs(entries) do
    local kind = e.objective.kind
    local ok = kind == "quadratic" or (method == "stable" and kind == "least_squares")
    if not ok then
      spec_error("method '%s' needs a quadratic%s objective, got %s", method,
                 method == "stable" and " or least-squares" or "", tostring(kind or e.objective:name()))
    end
    if kind == "quadratic" and (e.objective.fstar or 0) ~= 0 then spec_error("method '%s' needs fstar = 0", method) end
  end
end

-- Gradient entries as the user gave theta: numbers for numbers, tensors for tensors.
local function format_result(r, spec, theta, method)
  local opt = spec.optimizer
  local names = selection(opt, spec)
  local index = {}
  for i, k in ipairs(opt.params) do index[k] = i end
  local out = {value = r.value, status = r.status, method = method, fail_step = r.fail_step, grad = {}}
  if r.log_loss == r.log_loss then out.log_loss, out.log_abs_grad = r.log_loss, {} end
  for _, k in ipairs(names) do
    local g = r.grad[index[k]]
    if g ~= nil then
      out.grad[k] = (type(theta[k]) == "number" and g:numel() == 1) and g:item() or g
      if out.log_abs_grad then out.log_abs_grad[k] = r.log_abs_grad[index[k]] end
    end
  end
  return out
end

--- value_and_grad(spec): the meta-objective and its meta-gradient (averaged over spec.tasks
-- when given). See the module comment for the spec and the result.
-- 'start' continues a run: meta.unroll only (the meta-gradient methods start each run afresh).
local function no_start(spec)
  if type(spec) == "table" and spec.start ~= nil then spec_error("'start' applies to meta.unroll only") end
end

function M.value_and_grad(spec)
  no_start(spec)
  local theta, T, meta = check_spec(spec)
  local method = spec.method or "reverse"
  if type(method) ~= "string" or not methods_ok(method) then
    spec_error("unknown method '%s' (expected reverse, forward, exact, stable or fd)", tostring(method))
  end
  local entries = tasks_of(spec)
  check_method_domain(spec, method, meta, entries)
  local r = engine(core.meta_value_and_grad, engine_spec(spec, theta, T, meta, entries, method))
  return format_result(r, spec, theta, method)
end

--- value(spec): the meta-objective only (a number), with its status.
function M.value(spec)
  no_start(spec)
  local theta, T, meta = check_spec(spec)
  local entries = tasks_of(spec)
  local method = spec.method or "reverse"
  if type(method) ~= "string" or not methods_ok(method) then
    spec_error("unknown method '%s' (expected reverse, forward, exact, stable or fd)", tostring(method))
  end
  return engine(core.meta_value, engine_spec(spec, theta, T, meta, entries, method, true))
end

--- unroll(spec): runs the optimizer on the spec's (first) task (continuing from spec.start, a
-- trajectory's stop, when given); returns the trajectory:
-- {T, losses = {f(w_1), ..., f(w_T)} (0-d tensors), loss0 = f(w_0), w_T, w = {[0] = w_0, ...}
--  (when spec.keep_iterates), status, fail_step, stop = {w =, state =, t =} (where the run stopped:
--  spec.start of the next piece of a long run)}. The run stops at the first step whose iterate
-- or loss is not a faithful double.
function M.unroll(spec)
  local theta, T, meta = check_spec(spec)
  local entries = tasks_of(spec)
  if spec.start ~= nil and (type(spec.start) ~= "table" or not is_tensor(spec.start.w)) then
    spec_error("'start' must be a trajectory's stop {w =, state =, t =}, got %s", type(spec.start))
  end
  local traj = engine(core.meta_unroll, engine_spec(spec, theta, T, meta, entries, "reverse", true), 1,
                      spec.keep_iterates, spec.start)
  traj.objective, traj.task, traj.theta = entries[1].objective, entries[1].task, theta
  return traj
end

-- ---------------------------------------------------------------- meta-training

local function fmt_theta(theta, names)
  local parts = {}
  for _, k in ipairs(names) do
    local v = theta[k]
    parts[#parts + 1] = is_tensor(v) and ("%s=[%d values]"):format(k, v:numel()) or ("%s=%.6g"):format(k, v)
  end
  return table.concat(parts, " ")
end

-- opts[key] is nil or of type want; else raises msg, formatted with the type it has
local function check_train_type(opts, key, want, msg)
  if opts[key] ~= nil and type(opts[key]) ~= want then fail("meta.train: ", msg, type(opts[key])) end
end

local function check_train_number(opts, key, default, lo, lo_open)
  local v = opts[key]
  if v == nil then return default end
  if type(v) ~= "number" or v ~= v or v == math.huge or v == -math.huge then
    fail("meta.train: ", "option '%s' must be a finite number, got %s", key, show(v))
  end
  if v < lo or (lo_open and v == lo) then
    fail("meta.train: ", "option '%s' must be %s %g, got %s", key, lo_open and ">" or ">=", lo, show(v))
  end
  return v
end

-- A resumed run's log: keeps the header and the whole rows of iterations 1..k0 (dropping rows
-- written after the checkpoint and a row cut short by a kill), rewritten through a temporary
-- file, and returns it opened for appending.
local function reopen_log(path, header, k0)
  local f, err = io.open(path, "r")
  if not f then fail("meta.train: ", "cannot resume the log: %s", err) end
  local text = f:read("a")
  f:close()
  local keep = {}
  for line in text:gmatch("([^\n]*)\n") do
    if #keep == 0 then
      if line ~= header then fail("meta.train: ", "cannot resume the log '%s': its header is not this run's", path) end
    else
      local k = math.tointeger(tonumber(line:match("^(%d+),")))
      if k == nil or k > k0 or k ~= #keep then break end
    end
    keep[#keep + 1] = line
  end
  if #keep - 1 ~= k0 then
    fail("meta.train: ", "cannot resume the log '%s': it holds %d whole rows, the checkpoint is at iteration %d",
         path, math.max(#keep - 1, 0), k0)
  end
  local tmp = path .. ".tmp"
  local g
  g, err = io.open(tmp, "w")
  if not g then fail("meta.train: ", "cannot rewrite the log: %s", err) end
  g:write(table.concat(keep, "\n"), "\n")
  g:close()
  local ok, rerr = os.rename(tmp, path)
  if not ok then fail("meta.train: ", "cannot rewrite the log: %s", rerr) end
  f, err = io.open(path, "a")
  if not f then fail("meta.train: ", "cannot append to the log: %s", err) end
  return f
end

--- train(opts): meta-gradient descent on theta.
-- opts: the spec fields (objective/w0, or sample = a task sampler with batch = tasks per
-- iteration; optimizer; steps; meta; method) plus
--   iterations = 100, meta_lr = 0.01, schedule = "inv_sqrt" | "constant" | f(k),
--   meta_optimizer = "gd" | "adam" | "rmsprop", clip = c (clip each meta-gradient entry to [-c, c]),
--   bounds = {name = {lo, hi}} (projection after each step; lr >= 0 and beta >= 0 unless given),
--   on_failure = "skip" | "zero" | "error" (what to do when a meta-gradient is not "ok":
--   skip the update, use 0 for non-finite entries as the authors' TensorFlow code did, or raise),
--   progress = false (no progress line on stderr; on by default), log = "file.csv",
--   callback = f(k, record) (return true to stop), sample = f(k, i) -> task (the i-th task of
--   iteration k; w0 defaults to the spec's),
--   checkpoint = "file" (a string; an integer stays the reverse method's recompute stride),
--   every = k (1) : save the whole run there every k iterations and at the end (theta, the
--   meta-optimizer's state, the generator, the history, the best so far, the position of an
--   ms.tasks sampler); resume = "file": continue such a run bit for bit (the log, if any, keeps
--   its rows up to the checkpoint and is appended to);
--   segments = S (1): truncated back-propagation through a long inner run: each task's run
--   continues over S consecutive iterations (each unrolls `steps` more steps from where the
--   last stopped, optimizer state and step count carried over), then fresh tasks are drawn.
-- Runs in the engine (ms_meta_train). Returns {theta =, history = {{k =, theta =, value =,
-- grad =, status =}, ...}, optimizer =, best_theta =, best_value =, best_k =, stopped =}:
-- stopped is "done", "callback" (callback returned true) or "interrupt" (Ctrl-C: the history so
-- far is returned, not lost).
function M.train(opts)
  if type(opts) ~= "table" then fail("meta.train: ", "expected an options table, got %s", type(opts)) end
  check_known(opts, {SPEC_OPTIONS, TRAIN_OPTIONS}, "meta.train: ")
  if opts.start ~= nil then fail("meta.train: ", "'start' applies to meta.unroll only (see 'segments')") end
  local K = opts.iterations or 100
  if math.type(K) == nil or math.tointeger(K) == nil or K < 0 then
    fail("meta.train: ", "option 'iterations' must be an integer >= 0, got %s", show(K))
  end
  K = math.tointeger(K)
  local base_lr = check_train_number(opts, "meta_lr", 0.01, 0)
  local clip = opts.clip ~= nil and check_train_number(opts, "clip", nil, 0, true) or nil
  local sched = opts.schedule or "inv_sqrt"
  if type(sched) == "string" then
    if sched ~= "inv_sqrt" and sched ~= "constant" then
      fail("meta.train: ", "unknown schedule '%s' (inv_sqrt, constant or a function)", sched)
    end
  elseif type(sched) ~= "function" then
    fail("meta.train: ", "option 'schedule' must be inv_sqrt, constant or a function, got %s", type(sched))
  end
  local on_failure = opts.on_failure or "skip"
  if on_failure ~= "skip" and on_failure ~= "zero" and on_failure ~= "error" then
    fail("meta.train: ", "unknown on_failure '%s' (skip, zero or error)", tostring(on_failure))
  end
  local meta_opt = opts.meta_optimizer or "gd"
  if meta_opt ~= "gd" and meta_opt ~= "adam" and meta_opt ~= "rmsprop" then
    fail("meta.train: ", "unknown meta_optimizer '%s' (gd, adam or rmsprop)", tostring(meta_opt))
  end
  check_train_type(opts, "sample", "function", "option 'sample' must be a function returning a task, got %s")
  local batch = opts.batch or 1
  if math.type(batch) == nil or math.tointeger(batch) == nil or batch < 1 then
    fail("meta.train: ", "option 'batch' must be an integer >= 1, got %s", show(batch))
  end
  check_train_type(opts, "callback", "function", "option 'callback' must be a function, got %s")
  -- lr >= 0 and beta >= 0 (their domains) stay unless the caller bounds them itself
  check_train_type(opts, "bounds", "table", "option 'bounds' must be a table {name = {lo, hi}}, got %s")
  for k, b in pairs(opts.bounds or {}) do
    if type(b) ~= "table" or type(b[1]) ~= "number" or type(b[2]) ~= "number" or not (b[1] <= b[2]) then
      fail("meta.train: ", "bounds for '%s' must be {lo, hi} with lo <= hi", tostring(k))
    end
  end
  local spec = {}
  for _, k in ipairs(SPEC_OPTIONS) do spec[k] = opts[k] end
  local o = opts.optimizer
  if type(o) ~= "table" or type(o.c) ~= "userdata" or type(o.theta) ~= "table" then
    fail("meta.train: ", "'optimizer' must be an optimizer (ms.optim.gd{...}, ...), got %s", type(opts.optimizer))
  end
  check_train_type(opts, "theta", "table", "'theta' must be a table of meta-parameter values, got %s")
  check_train_type(opts, "log", "string", "option 'log' must be a file name, got %s")
  -- checkpoint = "file" saves the run; checkpoint = K (a number) is the reverse method's stride
  local ckpt = type(opts.checkpoint) == "string" and opts.checkpoint or nil
  if ckpt then spec.checkpoint = nil end
  check_train_type(opts, "resume", "string", "option 'resume' must be a checkpoint file name, got %s")
  if opts.every ~= nil then
    if not ckpt then fail("meta.train: ", "option 'every' needs checkpoint = \"file\"") end
    if math.type(opts.every) == nil or math.tointeger(opts.every) == nil or opts.every < 1 then
      fail("meta.train: ", "option 'every' must be an integer >= 1, got %s", show(opts.every))
    end
  end
  if opts.segments ~= nil then
    if math.type(opts.segments) == nil or math.tointeger(opts.segments) == nil or opts.segments < 1 then
      fail("meta.train: ", "option 'segments' must be an integer >= 1, got %s", show(opts.segments))
    end
    if opts.segments > 1 and (ckpt or opts.resume) then
      fail("meta.train: ", "option 'segments' > 1 cannot be combined with 'checkpoint' or 'resume'")
    end
  end
  if opts.sample and (opts.objective ~= nil or opts.task ~= nil or opts.tasks ~= nil) then
    fail("meta.train: ", "'sample' draws the tasks: give it instead of 'objective', 'task' or 'tasks'")
  end
  local method = opts.method or "reverse"
  if type(method) ~= "string" or not methods_ok(method) then
    fail("meta.train: ", "unknown method '%s' (expected reverse, forward, exact, stable or fd)", tostring(method))
  end
  local theta = {}
  for k, v in pairs(opts.optimizer.theta) do theta[k] = v end
  for k, v in pairs(opts.theta or {}) do theta[k] = v end
  spec.theta = theta
  local _, T, meta = check_spec(spec, "train")
  local opt = spec.optimizer
  -- columns and progress in name order (the log's format)
  local names = {}
  for _, k in ipairs(selection(opt, spec)) do names[#names + 1] = k end
  if not spec.params then table.sort(names) end
  local index = {}
  for i, k in ipairs(opt.params) do index[k] = i end
  for k in pairs(opts.bounds or {}) do
    if not index[k] then fail("meta.train: ", "bounds for unknown meta-parameter '%s'", tostring(k)) end
  end
  local entries = opts.sample and {} or tasks_of(spec)
  if not opts.sample then check_method_domain(spec, spec.method or "reverse", meta, entries) end
  local cspec = engine_spec(spec, theta, T, meta, entries, method)
  if opts.sample then cspec.tasks = {} end
  -- numbers stay numbers for one-element parameters given as numbers
  local function named(list)
    local t = {}
    for i, k in ipairs(opt.params) do
      local v = list[i]
      if v ~= nil and type(theta[k]) == "number" and v:numel() == 1 then v = v:item() end
      t[k] = v
    end
    return t
  end
  local logf, header
  if opts.log then
    local cols = {"iter"}
    for _, k in ipairs(names) do cols[#cols + 1] = k end
    cols[#cols + 1] = "meta_loss"
    for _, k in ipairs(names) do cols[#cols + 1] = "grad_" .. k end
    cols[#cols + 1] = "status"
    header = table.concat(cols, ",")
  end
  if opts.log and not opts.resume then
    local err
    logf, err = io.open(opts.log, "w")
    if not logf then fail("meta.train: ", "cannot write the log: %s", err) end
    logf:write(header, "\n")
    logf:flush()
  end
  local function cell(v)
    if is_tensor(v) then
      local parts = {}
      for i, x in ipairs(v:reshape(v:numel()):totable()) do parts[i] = ("%.17g"):format(x) end
      return table.concat(parts, " ")
    end
    return ("%.17g"):format(v)
  end
  local function record(r)
    local rec = {k = r.k, value = r.value, status = r.status, fail_step = r.fail_step, theta = {}, grad = {}}
    local th, g = named(r.theta), named(r.grad)
    for _, n in ipairs(names) do rec.theta[n], rec.grad[n] = th[n], g[n] end
    return rec
  end
  -- progress: wall-clock rate and time left; updated in place (\r) on a terminal, else a plain
  -- line every few seconds so a log file gets readable lines
  local clock = core.clock
  local tty = core.isatty(io.stderr)
  local progress_every = tty and 0.5 or 5
  local start = clock()
  local last_progress = start
  local shown_progress, last_k, start_k = false, 0, 0
  local sample = opts.sample
  local copts = {iterations = K, meta_lr = base_lr, schedule = sched, clip = clip, segments = opts.segments,
                 meta_optimizer = meta_opt, on_failure = on_failure, batch = batch,
                 bounds = {}}
  if sample then
    -- a plain copy of each drawn task (the engine reads its fields raw), w0 from the spec if the
    -- task has none
    copts.sample = function(k, i)
      local task = sample(k, i)
      if type(task) ~= "table" then
        raise("", "meta.train: the sampler must return a task table, got %s", type(task))
      end
      return {objective = task.objective, valid_objective = task.valid_objective, w0 = task.w0 or spec.w0,
              task = task}
    end
  end
  for k, b in pairs(opts.bounds or {}) do copts.bounds[index[k]] = b end
  copts.callback = function(r, theta_list)
    last_k = r.k
    local rec = record(r)
    if logf then
      local row = {r.k}
      for _, n in ipairs(names) do row[#row + 1] = cell(rec.theta[n]) end
      row[#row + 1] = ("%.17g"):format(r.value)
      for _, n in ipairs(names) do row[#row + 1] = cell(rec.grad[n]) end
      row[#row + 1] = r.status
      logf:write(table.concat(row, ","), "\n")
      logf:flush() -- a killed run leaves whole rows
    end
    -- at most about two progress updates a second, plus the first and the last
    if opts.progress ~= false and (r.k == 1 or r.k == K or clock() - last_progress >= progress_every) then
      last_progress = clock()
      shown_progress = tty
      local rate = (r.k - start_k) / math.max(clock() - start, 1e-9)
      local line = ("meta %d/%d  %s  meta=%.6g  %s  %.1f it/s  %.0fs left"):format(
        r.k, K, fmt_theta(named(theta_list), names), r.value, r.status, rate, (K - r.k) / rate)
      io.stderr:write(tty and ("\r" .. line .. "\27[K") or (line .. "\n"))
      if tty and r.k == K then io.stderr:write("\n") end
    end
    if opts.callback then return opts.callback(r.k, rec) == true end
    return false
  end
  if ckpt or opts.resume then
    copts.checkpoint, copts.every, copts.resume = ckpt, opts.every or 1, opts.resume
    local tasks = require("metastep.objective").tasks
    copts.save_state = function() return {sampler = sample and tasks.position(sample) or nil} end
    copts.load_state = function(host, k0)
      local pos = type(host) == "table" and host.sampler or nil
      if pos and not (sample and tasks.position(sample)) then
        fail("meta.train: ", "cannot resume: the checkpoint holds the position of an ms.tasks sampler, "
             .. "option 'sample' is not one")
      end
      if opts.log then logf = reopen_log(opts.log, header, k0) end
      if pos then tasks.set_position(sample, pos) end
      start_k = k0
    end
  end
  core.meta_train_last() -- nothing left over from an earlier run
  local ok, res = pcall(engine, core.meta_train, cspec, copts)
  if not ok then
    -- Ctrl-C after the engine returned (its hook fires at the next Lua instruction): the
    -- result is not lost
    local partial = core.meta_train_last()
    if partial then ok, res = true, partial end
  else
    core.meta_train_last()
  end
  if logf then logf:close() end
  if shown_progress and last_k ~= K then io.stderr:write("\n") end -- a run that stopped early
  if not ok then error(res, 0) end
  local out = {theta = named(res.theta), history = {}, optimizer = opts.optimizer, stopped = res.stopped,
               best_value = res.best_value, best_k = res.best_k,
               best_theta = res.best_k > 0 and named(res.best_theta) or nil}
  for i, r in ipairs(res.history) do out.history[i] = record(r) end
  if res.stopped == "interrupt" then io.stderr:write("\nmeta.train: interrupted; the history so far is returned\n") end
  return out
end

return M
