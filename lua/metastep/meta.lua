--- Unrolled trajectories, meta-objectives, meta-gradients and meta-training.
--
-- A run is described by a spec table:
--   objective = obj (or task = {objective =, valid_objective =, w0 =}, or tasks = {...}),
--   optimizer = ms.optim.gd{lr = 0.1} (its theta gives the meta-parameters),
--   w0 = tensor (default: zeros), steps = T, meta = "log" | "naive" | "sum" | "logsum" |
--   "train" | "valid" | function(traj) -> number or tensor,
--   method = "reverse" | "forward" | "exact" | "stable" | "fd",
--   truncate = K (derivatives through the last K steps only: w_{T-K}, its loss and the
--   optimizer state are held constant; losses f(w_t), t <= T - K, that a meta-objective reads
--   keep their full derivatives), freeze_norm = R (a task's
--   run is frozen once |w_t| >= R, projected to norm R), theta = {...} (overrides).
-- value_and_grad(spec) returns {value =, grad = {name = number}, status =, method =,
-- fail_step =}: status is "ok", or "overflow", "underflow", "nan" when the method could
-- not give a faithful number (and at which step it first went wrong).
local core = require "metastep.core"

local M = {}

local DBL_MIN = 2.2250738585072014e-308

local function is_tensor(v) return getmetatable(v) == core.Tensor_mt end
local function num(v) return is_tensor(v) and v:item() or v end

-- ---------------------------------------------------------------- meta-objectives

--- The built-in meta-objectives, as functions of a trajectory (tensors in, tensor out).
M.objectives = {
  naive = function(traj) return traj.losses[traj.T] end,
  log = function(traj) return core.log(traj.losses[traj.T]) / traj.T end,
  sum = function(traj)
    local s = traj.losses[1]
    for t = 2, traj.T do s = s + traj.losses[t] end
    return s
  end,
  logsum = function(traj)
    -- running log(exp(s) + exp(l)) = max(s, l) + log1p(exp(-|s - l|)): stable, any T
    local s = core.log(traj.losses[1])
    for t = 2, traj.T do
      local l = core.log(traj.losses[t])
      s = core.maximum(s, l) + core.log1p(core.exp(-core.abs(s - l)))
    end
    return s / traj.T
  end,
  train = function(traj) return traj.losses[traj.T] end,
  valid = function(traj)
    local v = traj.task and traj.task.valid_objective
    if not v then error("meta 'valid': the task has no validation set (valid_objective)", 0) end
    return v:value(traj.w_T)
  end,
}

-- ---------------------------------------------------------------- checking inputs

-- Raises "meta: <msg>" blamed on the first Lua caller outside this file, as luaL_argerror
-- blames the caller: the checks sit at different depths (check_spec, tasks_of, the methods),
-- and a fixed level pointed some messages at meta.lua itself.
local SOURCE = debug.getinfo(1, "S").source
local function spec_error(msg, ...)
  local level = 2
  while true do
    local info = debug.getinfo(level, "S")
    if not info or (info.source ~= SOURCE and info.what ~= "C") then break end
    level = level + 1
  end
  error(("meta: " .. msg):format(...), level)
end

-- A number for a message: NaN prints as "nan" on every platform (tostring gives "-nan" on x86).
local function show(v)
  if type(v) == "number" and v ~= v then return "nan" end
  return tostring(v)
end

local function check_spec(spec)
  if type(spec) ~= "table" then error(("meta: expected a spec table, got %s"):format(type(spec)), 3) end
  local opt = spec.optimizer
  if type(opt) ~= "table" or type(opt.step) ~= "function" then
    spec_error("'optimizer' must be an optimizer (ms.optim.gd{...}, ...), got %s", type(opt))
  end
  -- math.tointeger also rejects inf and floats beyond the integer range, which passed
  -- a T == floor(T) test and then broke the unroll's loop.
  local T = type(spec.steps) == "number" and math.tointeger(spec.steps) or nil
  if not T then spec_error("'steps' must be an integer, got %s", show(spec.steps)) end
  if T < 1 then spec_error("'steps' must be >= 1, got %d", T) end
  local theta = {}
  for k, v in pairs(opt.theta or {}) do theta[k] = v end
  for k, v in pairs(spec.theta or {}) do theta[k] = v end
  for k, v in pairs(theta) do
    if type(v) ~= "number" then spec_error("meta-parameter '%s' must be a number, got %s", k, type(v)) end
    if v ~= v or v == math.huge or v == -math.huge then
      spec_error("meta-parameter '%s' must be finite, got %s", k, show(v))
    end
    if (k == "lr" or k == "beta") and v < 0 then
      spec_error("meta-parameter '%s' must be >= 0, got %g", k, v)
    end
  end
  local meta = spec.meta or "log"
  if type(meta) == "string" and not M.objectives[meta] then
    spec_error("unknown meta-objective '%s' (expected naive, log, sum, logsum, train, valid or a function)", meta)
  elseif type(meta) ~= "string" and type(meta) ~= "function" then
    spec_error("'meta' must be a name or a function of the trajectory, got %s", type(meta))
  end
  -- an integer: the unroll cuts the graph at step T - K + 1, which a fraction never equals
  if spec.truncate ~= nil and (math.type(spec.truncate) == nil or math.tointeger(spec.truncate) == nil
                               or spec.truncate < 1) then
    spec_error("'truncate' must be an integer number of steps >= 1, got %s", show(spec.truncate))
  end
  return theta, T, meta
end

-- The tasks of a spec: {objective, w0, task} entries.
local function tasks_of(spec)
  local list = {}
  local function add(task, obj, w0)
    if obj == nil or type(obj.value) ~= "function" or type(obj.grad) ~= "function" then
      spec_error("'objective' must be an objective (ms.objective.quadratic(H), ...), got %s", type(obj))
    end
    local d = obj:dim()
    w0 = w0 or core.zeros(d)
    if not is_tensor(w0) then spec_error("'w0' must be a tensor, got %s", type(w0)) end
    local s = w0:shape()
    if #s ~= 1 or s[1] ~= d then
      spec_error("'w0' has shape [%s] but the objective has dimension %d", table.concat(s, ","), d)
    end
    list[#list + 1] = {objective = obj, w0 = w0, task = task}
  end
  if spec.tasks then
    if type(spec.tasks) ~= "table" or #spec.tasks == 0 then spec_error("'tasks' must be a non-empty list of tasks") end
    for _, task in ipairs(spec.tasks) do add(task, task.objective, task.w0 or spec.w0) end
  elseif spec.task then
    add(spec.task, spec.task.objective, spec.task.w0 or spec.w0)
  else
    add(nil, spec.objective, spec.w0)
  end
  return list
end

-- ---------------------------------------------------------------- unroll

-- Status of a scalar loss value: nil when fine.
local function loss_status(v)
  if v ~= v then return "nan" end
  if v == math.huge or v == -math.huge then return "overflow" end
  if v == 0 or math.abs(v) < DBL_MIN then return "underflow" end
end

--- unroll(spec [, theta]) runs the optimizer; returns the trajectory:
-- {T, losses = {f(w_1), ..., f(w_T)} (0-d tensors), loss0 = f(w_0), w_T, w = {[0] = w_0, ...}
--  (when spec.keep_iterates), status, fail_step, objective, task, theta}.
-- The run stops at the first step whose iterate or loss is not a faithful double.
function M.unroll(spec, theta, entry)
  local th, T = check_spec(spec)
  theta = theta or th
  entry = entry or tasks_of(spec)[1]
  local obj, opt = entry.objective, spec.optimizer
  local w = entry.w0
  local traj = {T = T, losses = {}, objective = obj, task = entry.task, theta = theta, status = "ok"}
  if spec.keep_iterates then traj.w = {[0] = w} end
  local state = opt.init(w, theta)
  local fw = obj:value(w)
  traj.loss0 = fw
  local K, R = spec.truncate, spec.freeze_norm
  local log_meta = spec.meta == nil or spec.meta == "log" or spec.meta == "logsum"
  local frozen = false
  local rng_seed = opt.seed or 0
  for t = 1, T do
    if K and t == T - K + 1 then
      -- everything the next step reads from the held steps: the iterate, its loss, the state
      w, fw = core.stop_gradient(w), core.stop_gradient(fw)
      for k, v in pairs(state) do if is_tensor(v) then state[k] = core.stop_gradient(v) end end
    end
    if not frozen then
      local gw
      if opt.stochastic then
        local n = obj.n or error("meta: optimizer '" .. opt.name .. "' needs an objective with samples (:minibatch)", 0)
        local u = core.rand({opt.batch}, {seed = rng_seed * 7919 + t, lo = 0, hi = n})
        local idx = {}
        for i = 1, opt.batch do idx[i] = math.floor(u[i]) + 1 end
        gw = obj:minibatch(idx):grad(w)
      else
        gw = obj:grad(w)
      end
      w, state = opt.step(theta, state, w, fw, gw, t)
      if R then
        local nrm = w:norm()
        if nrm:item() >= R then
          w = w * (R / nrm)
          frozen = true
        end
      end
    end
    if not core.all_finite(w) then
      traj.status = core.max(core.abs(w)):item() ~= core.max(core.abs(w)):item() and "nan" or "overflow"
      traj.fail_step = t
      break
    end
    fw = obj:value(w)
    local st = loss_status(fw:item())
    -- a loss of exactly 0 (or below DBL_MIN) only breaks meta-objectives that take its log
    if st == "underflow" and (spec.allow_zero_loss or not log_meta) then st = nil end
    if st then
      traj.status, traj.fail_step = st, t
      break
    end
    traj.losses[t] = fw
    if traj.w then traj.w[t] = w end
  end
  traj.w_T = w
  return traj
end

-- ---------------------------------------------------------------- methods

local function meta_fn(meta)
  return type(meta) == "function" and meta or M.objectives[meta]
end

-- Meta value of one task as a tensor, or nil and the trajectory when the unroll failed.
local function task_value(spec, theta, entry, meta)
  local traj = M.unroll(spec, theta, entry)
  if traj.status ~= "ok" then return nil, traj end
  local v = meta_fn(meta)(traj)
  if type(v) == "number" then v = core.tensor(v) end
  if not is_tensor(v) or v:numel() ~= 1 then
    error(("meta: the meta-objective must return a number or a one-element tensor, got %s"):format(
      is_tensor(v) and ("shape [" .. table.concat(v:shape(), ",") .. "]") or type(v)), 0)
  end
  return v, traj
end

local function value_status(v)
  if v ~= v then return "nan" end
  if v == math.huge or v == -math.huge then return "overflow" end
  return "ok"
end

local function param_names(theta, spec)
  local names = {}
  for k in pairs(theta) do names[#names + 1] = k end
  table.sort(names)
  if spec.params then
    names = {}
    for _, k in ipairs(spec.params) do
      if theta[k] == nil then spec_error("unknown meta-parameter '%s'", k) end
      names[#names + 1] = k
    end
  end
  return names
end

local function failed(names, traj, method)
  local g = {}
  for _, k in ipairs(names) do g[k] = 0 / 0 end
  return {value = 0 / 0, grad = g, status = traj.status, fail_step = traj.fail_step, method = method}
end

local methods = {}

function methods.reverse(spec, theta, names, entry, meta)
  local tape <close> = core.ad_push("reverse")
  local th, xs = {}, {}
  for k, v in pairs(theta) do th[k] = v end
  for i, k in ipairs(names) do
    th[k] = tape:watch(core.tensor(theta[k]))
    xs[i] = th[k]
  end
  local v, traj = task_value(spec, th, entry, meta)
  tape:pop()
  if not v then return failed(names, traj, "reverse") end
  local gs = tape:gradient(v, xs)
  local r = {value = v:item(), grad = {}, status = "ok", method = "reverse"}
  r.status = value_status(r.value)
  for i, k in ipairs(names) do
    r.grad[k] = gs[i]:item()
    local st = value_status(r.grad[k])
    if r.status == "ok" and st ~= "ok" then r.status = st end
  end
  return r
end

function methods.forward(spec, theta, names, entry, meta)
  local r = {grad = {}, status = "ok", method = "forward"}
  for _, k in ipairs(names) do
    local level <close> = core.ad_push("forward")
    local th = {}
    for kk, vv in pairs(theta) do th[kk] = vv end
    th[k] = level:watch(core.tensor(theta[k]), core.tensor(1.0))
    local v, traj = task_value(spec, th, entry, meta)
    level:pop()
    if not v then return failed(names, traj, "forward") end
    r.value = v:item()
    r.grad[k] = level:tangent(v):item()
    for _, x in ipairs{r.value, r.grad[k]} do
      local st = value_status(x)
      if r.status == "ok" and st ~= "ok" then r.status = st end
    end
  end
  return r
end

-- The quadratic and optimizer a closed-form or stable method needs, or an error naming why not.
local function quadratic_parts(spec, entry, method, meta, allowed_opt, allowed_meta)
  local obj, opt = entry.objective, spec.optimizer
  if obj.kind ~= "quadratic" then
    spec_error("method '%s' needs a quadratic objective, got %s", method, obj.kind or obj:name())
  end
  if not allowed_opt[opt.kind] then
    spec_error("method '%s' handles the optimizers %s, got %s", method, table.concat(allowed_opt, ", "), opt.kind)
  end
  if type(meta) ~= "string" or not allowed_meta[meta] then
    spec_error("method '%s' handles the meta-objectives %s, got %s", method,
      table.concat(allowed_meta, ", "), type(meta) == "function" and "a function" or tostring(meta))
  end
  if opt.schedule then spec_error("method '%s' does not handle step-size schedules", method) end
  if spec.truncate then spec_error("method '%s' does not handle truncation", method) end
  if spec.freeze_norm then spec_error("method '%s' does not handle freeze_norm", method) end
  if obj.fstar and obj.fstar ~= 0 then spec_error("method '%s' needs fstar = 0", method) end
  if not M._psd(obj) then
    spec_error("method '%s' needs a positive semi-definite H (smallest eigenvalue %g)", method, obj._min_eig)
  end
  return obj, opt
end

-- Whether a quadratic's H is positive semi-definite (cached on the objective).
function M._psd(obj)
  if obj._min_eig == nil then
    local lam = core.eigh(obj.H)
    obj._min_eig = lam[1]
    obj._max_eig = lam[lam:numel()]
  end
  return obj._min_eig >= -1e-12 * math.max(1, math.abs(obj._max_eig))
end

-- Chain rule for a log-parametrized step size: d/d log_lr = lr * d/d lr.
local function lr_of(opt, theta)
  if opt.log_lr then return math.exp(theta.log_lr), "log_lr" end
  return theta.lr, "lr"
end

local function from_engine(res, opt, theta, names, method)
  local lr, lrname = lr_of(opt, theta)
  local r = {value = res.value, log_loss = res.log_loss, status = res.status, method = method,
             grad = {}, log_abs_grad = {}}
  if res.fail_step >= 0 then r.fail_step = res.fail_step end
  local g = {[lrname] = res.grad[1], beta = res.grad[2]}
  local lg = {[lrname] = res.log_abs_grad[1], beta = res.log_abs_grad[2]}
  if opt.log_lr then
    g.log_lr = g.log_lr * lr
    lg.log_lr = lg.log_lr + math.log(lr)
  end
  for _, k in ipairs(names) do r.grad[k], r.log_abs_grad[k] = g[k], lg[k] end
  return r
end

function methods.exact(spec, theta, names, entry, meta)
  local obj, opt = quadratic_parts(spec, entry, "exact", meta, {gd = true, "gd"},
    {naive = true, log = true, "naive", "log"})
  local lam, Q = core.eigh(obj.H)
  local e = obj.wstar and entry.w0 - obj.wstar or entry.w0
  local c = core.matvec(Q:t(), e)
  local lr = lr_of(opt, theta)
  local res = core.meta_gd_exact(lam, c, lr, spec.steps, meta)
  return from_engine(res, opt, theta, names, "exact")
end

function methods.stable(spec, theta, names, entry, meta)
  local obj, opt = quadratic_parts(spec, entry, "stable", meta, {gd = true, momentum = true, "gd", "momentum"},
    {naive = true, log = true, sum = true, logsum = true, "naive", "log", "sum", "logsum"})
  local lr = lr_of(opt, theta)
  local res = core.meta_stable(obj.H, entry.w0, obj.wstar, {kind = opt.kind, lr = lr, beta = theta.beta},
    spec.steps, meta)
  return from_engine(res, opt, theta, names, "stable")
end

-- The meta value as a number, through the stable routine when it applies.
local function plain_value(spec, theta, entry, meta)
  local obj, opt = entry.objective, spec.optimizer
  if obj.kind == "quadratic" and (opt.kind == "gd" or opt.kind == "momentum") and type(meta) == "string"
     and (meta == "naive" or meta == "log" or meta == "sum" or meta == "logsum") and not opt.schedule
     and not spec.truncate and not spec.freeze_norm and (obj.fstar or 0) == 0 and M._psd(obj) then
    local res = methods.stable(spec, theta, {}, entry, meta)
    return res.value, res.status
  end
  local v, traj = task_value(spec, theta, entry, meta)
  if not v then return 0 / 0, traj.status end
  return v:item(), value_status(v:item())
end

function methods.fd(spec, theta, names, entry, meta)
  local r = {grad = {}, status = "ok", method = "fd"}
  local v0, st0 = plain_value(spec, theta, entry, meta)
  r.value, r.status = v0, st0
  for _, k in ipairs(names) do
    local x = theta[k]
    local h = spec.fd_step or 1e-4 * math.max(math.abs(x), 1e-2)
    -- near the edge of the domain (lr, beta >= 0) a one-sided stencil stays inside it
    local one_sided = (k == "lr" or k == "beta") and x - 2 * h < 0
    local offsets = one_sided and {0, 1, 2, 3, 4} or {-2, -1, 1, 2}
    local vals = {}
    for i, s in ipairs(offsets) do
      local th = {}
      for kk, vv in pairs(theta) do th[kk] = vv end
      th[k] = x + s * h
      local v, st = plain_value(spec, th, entry, meta)
      if st ~= "ok" and r.status == "ok" then r.status = st end
      vals[i] = v
    end
    if one_sided then -- fourth-order forward difference
      r.grad[k] = (-25 * vals[1] + 48 * vals[2] - 36 * vals[3] + 16 * vals[4] - 3 * vals[5]) / (12 * h)
    else
      r.grad[k] = (vals[1] - 8 * vals[2] + 8 * vals[3] - vals[4]) / (12 * h)
    end
  end
  return r
end

--- value_and_grad(spec): the meta-objective and its meta-gradient (averaged over spec.tasks
-- when given). See the module comment for the spec and the result.
function M.value_and_grad(spec)
  local theta, _, meta = check_spec(spec)
  local method = spec.method or "reverse"
  local fn = methods[method]
  if not fn then
    spec_error("unknown method '%s' (expected reverse, forward, exact, stable or fd)", tostring(method))
  end
  local names = param_names(theta, spec)
  local entries = tasks_of(spec)
  local total = {value = 0, grad = {}, status = "ok", method = method}
  for _, k in ipairs(names) do total.grad[k] = 0 end
  for _, entry in ipairs(entries) do
    local r = fn(spec, theta, names, entry, meta)
    if #entries == 1 then return r end
    total.value = total.value + r.value / #entries
    for _, k in ipairs(names) do total.grad[k] = total.grad[k] + r.grad[k] / #entries end
    if r.status ~= "ok" and total.status == "ok" then total.status, total.fail_step = r.status, r.fail_step end
  end
  return total
end

--- value(spec): the meta-objective only (a number), with its status.
function M.value(spec)
  local theta, _, meta = check_spec(spec)
  local entries = tasks_of(spec)
  local sum, status = 0, "ok"
  for _, entry in ipairs(entries) do
    local v, st = plain_value(spec, theta, entry, meta)
    sum = sum + v / #entries
    if st ~= "ok" and status == "ok" then status = st end
  end
  return sum, status
end

-- ---------------------------------------------------------------- meta-training

local function fmt_theta(theta, names)
  local parts = {}
  for _, k in ipairs(names) do parts[#parts + 1] = ("%s=%.6g"):format(k, theta[k]) end
  return table.concat(parts, " ")
end

--- train(opts): meta-gradient descent on theta.
-- opts: the spec fields (objective/w0, or sample = a task sampler with batch = tasks per
-- iteration; optimizer; steps; meta; method) plus
--   iterations = 100, meta_lr = 0.01, schedule = "inv_sqrt" | "constant" | f(k),
--   meta_optimizer = "gd" | "adam", clip = c (clip each meta-gradient entry to [-c, c]),
--   bounds = {name = {lo, hi}} (projection after each step; lr >= 0 and beta >= 0 unless given),
--   on_failure = "skip" | "zero" | "error" (what to do when a meta-gradient is not "ok":
--   skip the update, use 0 for non-finite entries as the authors' TensorFlow code did, or raise),
--   progress = true (a progress line on stderr), log = "file.csv", callback = f(k, record).
-- Returns {theta =, history = {{k =, theta =, value =, grad =, status =}, ...}, optimizer =}.
function M.train(opts)
  if type(opts) ~= "table" then error(("meta.train: expected an options table, got %s"):format(type(opts)), 2) end
  local K = opts.iterations or 100
  local base_lr = opts.meta_lr or 0.01
  local sched = opts.schedule or "inv_sqrt"
  if type(sched) == "string" then
    if sched == "inv_sqrt" then sched = function(k) return 1 / math.sqrt(k) end
    elseif sched == "constant" then sched = function() return 1 end
    else error(("meta.train: unknown schedule '%s' (inv_sqrt, constant or a function)"):format(sched), 2) end
  end
  local on_failure = opts.on_failure or "skip"
  if on_failure ~= "skip" and on_failure ~= "zero" and on_failure ~= "error" then
    error(("meta.train: unknown on_failure '%s' (skip, zero or error)"):format(tostring(on_failure)), 2)
  end
  local meta_opt = opts.meta_optimizer or "gd"
  if meta_opt ~= "gd" and meta_opt ~= "adam" then
    error(("meta.train: unknown meta_optimizer '%s' (gd or adam)"):format(tostring(meta_opt)), 2)
  end
  -- lr >= 0 and beta >= 0 stay unless the caller bounds them itself (other bounds add to these)
  local bounds = {lr = {0, math.huge}, beta = {0, math.huge}}
  for k, b in pairs(opts.bounds or {}) do bounds[k] = b end
  local spec = {}
  for k, v in pairs(opts) do spec[k] = v end
  local theta = {}
  for k, v in pairs(opts.optimizer and opts.optimizer.theta or {}) do theta[k] = v end
  for k, v in pairs(opts.theta or {}) do theta[k] = v end
  spec.theta = theta
  local names = param_names(theta, spec)
  local adam = meta_opt == "adam"
  local updates = 0
  local m, v = {}, {}
  for _, k in ipairs(names) do m[k], v[k] = 0, 0 end
  local logf
  if opts.log then
    local err
    logf, err = io.open(opts.log, "w")
    if not logf then error("meta.train: cannot write the log: " .. err, 2) end
    local cols = {"iter"}
    for _, k in ipairs(names) do cols[#cols + 1] = k end
    cols[#cols + 1] = "meta_loss"
    for _, k in ipairs(names) do cols[#cols + 1] = "grad_" .. k end
    cols[#cols + 1] = "status"
    logf:write(table.concat(cols, ","), "\n")
  end
  local history = {}
  local last_progress = os.clock()
  local ok, err = pcall(function()
    for k = 1, K do
      if opts.sample then
        local tasks = {}
        for i = 1, opts.batch or 1 do tasks[i] = opts.sample() end
        spec.tasks = tasks
      end
      local r = M.value_and_grad(spec)
      local rec = {k = k, theta = {}, value = r.value, grad = {}, status = r.status}
      for _, n in ipairs(names) do rec.theta[n], rec.grad[n] = theta[n], r.grad[n] end
      history[k] = rec
      if logf then
        local row = {k}
        for _, n in ipairs(names) do row[#row + 1] = ("%.17g"):format(theta[n]) end
        row[#row + 1] = ("%.17g"):format(r.value)
        for _, n in ipairs(names) do row[#row + 1] = ("%.17g"):format(r.grad[n]) end
        row[#row + 1] = r.status
        logf:write(table.concat(row, ","), "\n")
      end
      local update = true
      if r.status ~= "ok" then
        if on_failure == "error" then
          error(("meta.train: iteration %d: meta-gradient status %s (step %s)"):format(k, r.status, tostring(r.fail_step)), 0)
        elseif on_failure == "skip" then
          update = false
        end
      end
      if update then
        updates = updates + 1 -- Adam's bias correction counts the updates actually made
        local lr = base_lr * sched(k)
        for _, n in ipairs(names) do
          local g = r.grad[n]
          -- non-finite entries become 0 (as the authors' TensorFlow code did), then clip
          if g ~= g or g == math.huge or g == -math.huge then g = 0 end
          if opts.clip then g = math.max(-opts.clip, math.min(opts.clip, g)) end
          if adam then
            m[n] = 0.9 * m[n] + 0.1 * g
            v[n] = 0.999 * v[n] + 0.001 * g * g
            local mh, vh = m[n] / (1 - 0.9 ^ updates), v[n] / (1 - 0.999 ^ updates)
            theta[n] = theta[n] - lr * mh / (math.sqrt(vh) + 1e-8)
          else
            theta[n] = theta[n] - lr * g
          end
          local b = bounds[n]
          if b then theta[n] = math.min(math.max(theta[n], b[1]), b[2]) end
        end
      end
      -- at most about two progress updates a second, plus the first and the last
      if opts.progress ~= false and (k == 1 or k == K or os.clock() - last_progress >= 0.5) then
        last_progress = os.clock()
        io.stderr:write(("\rmeta %d/%d  %s  meta=%.6g  %s   "):format(k, K, fmt_theta(theta, names), r.value, r.status))
        if k == K then io.stderr:write("\n") end
      end
      if opts.callback then opts.callback(k, rec) end
    end
  end)
  if logf then logf:close() end
  if not ok then error(err, 0) end
  return {theta = theta, history = history, optimizer = opts.optimizer}
end

return M
