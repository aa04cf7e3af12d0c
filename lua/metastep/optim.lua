--- Optimizers as boxes with meta-parameters theta: Lua handles on the engine's C optimizers.
-- An optimizer is a table with
--   name, kind ("gd", "sgd", "momentum", "nesterov", "rmsprop", "adam" or "custom"),
--   theta (the meta-parameters' initial stored values: numbers, or tensors of any shape),
--   params (their names in the engine's order) and c (the engine handle, metastep.Optim).
-- Every step runs in the engine (metastep/optim.h); meta-gradient methods trace through it.
-- ms.optim.new{theta, init, step} defines an optimizer in Lua: its step is called by the
-- engine through the same C interface as the built-ins.
local core = require "metastep.core"
local util = require "metastep.util"
local raise = util.raise

local M = {}

local function is_tensor(v) return getmetatable(v) == core.Tensor_mt end

-- Errors are blamed on the first caller outside the front library (util.raise).
local function fail(fname, fmt, ...) util.raise(fname .. ": ", fmt, ...) end

local function check_number(fname, opts, key, default, lo, lo_open)
  local v = opts[key]
  if v == nil then v = default end
  if type(v) ~= "number" then fail(fname, "option '%s' must be a number, got %s", key, type(v)) end
  if v ~= v or v == math.huge or v == -math.huge then
    fail(fname, "option '%s' must be finite, got %s", key, util.show(v))
  end
  if lo and (v < lo or (lo_open and v == lo)) then
    fail(fname, "option '%s' must be %s %g, got %g", key, lo_open and ">" or ">=", lo, v)
  end
  return v
end

-- Options each constructor knows: anything else is an error naming it.
local KNOWN = {
  gd = {"lr", "log_lr", "schedule"},
  sgd = {"lr", "log_lr", "schedule", "batch", "seed"},
  momentum = {"lr", "log_lr", "schedule", "beta", "nesterov"},
  nesterov = {"lr", "log_lr", "schedule", "beta"},
  rmsprop = {"lr", "log_lr", "schedule", "rho", "eps"},
  adam = {"lr", "log_lr", "schedule", "beta1", "beta2", "eps"},
}

local function check_known(fname, opts, known)
  local set = {}
  for _, k in ipairs(known) do set[k] = true end
  for k in pairs(opts) do
    if not set[k] then
      fail(fname, "unknown option '%s' (expected %s)", tostring(k), table.concat(known, ", "))
    end
  end
end

-- A schedule given as a table (copied: later edits of the caller's table do not leak in)
-- or a function of the step.
local function check_schedule(fname, s)
  if type(s) == "table" then
    if #s == 0 then fail(fname, "option 'schedule' must not be an empty table") end
    for i = 1, #s do
      if type(s[i]) ~= "number" then
        fail(fname, "option 'schedule' must hold numbers, entry %d is a %s", i, type(s[i]))
      end
      if not (s[i] >= 0) or s[i] == math.huge then
        fail(fname, "option 'schedule' must hold finite factors >= 0, entry %d is %s", i, util.show(s[i]))
      end
    end
    return table.move(s, 1, #s, 1, {})
  elseif type(s) ~= "function" then
    fail(fname, "option 'schedule' must be a function of the step or a table of factors, got %s", type(s))
  end
  return s
end

-- The Lua table around an engine optimizer.
local function wrap(c, kind, extra)
  local o = {c = c, kind = kind, name = c:name(), theta = {}, params = {}}
  for i, p in ipairs(c:params()) do
    o.params[i] = p.name
    o.theta[p.name] = p.init:numel() == 1 and p.init:ndim() == 0 and p.init:item() or p.init
  end
  for k, v in pairs(extra or {}) do o[k] = v end
  return o
end

-- Shared construction of the built-ins: lr given directly, as a tensor (one step size per
-- coordinate: any shape broadcasting against w) or log-parametrized; an optional schedule.
local function builtin(kind, opts, extra_check)
  local fname = "optim." .. kind
  opts = opts or {}
  if type(opts) ~= "table" then fail(fname, "expected an options table, got %s", type(opts)) end
  check_known(fname, opts, KNOWN[kind])
  local args = {log_lr = opts.log_lr and true or false}
  if is_tensor(opts.lr) then
    args.lr_init = opts.lr
  else
    -- log(0) = -inf would only be refused later, by meta, far from the cause
    args.lr = check_number(fname, opts, "lr", nil, 0, args.log_lr)
  end
  if extra_check then extra_check(fname, opts, args) end
  local schedule = opts.schedule ~= nil and check_schedule(fname, opts.schedule) or nil
  local engine_kind = kind
  if kind == "momentum" and opts.nesterov then engine_kind = "nesterov" end
  local c = core.optim_builtin(engine_kind, args)
  if schedule then c:set_schedule(schedule) end
  return wrap(c, engine_kind, {log_lr = args.log_lr, schedule = schedule, batch = args.batch, seed = args.seed})
end

--- gd{lr = 0.1 [, log_lr = true] [, schedule = f(t) or {factors}]}: w' = w - lr g.
-- lr may be a tensor (a step size per coordinate, shape [d], or any shape broadcasting to w).
function M.gd(opts) return builtin("gd", opts) end

--- sgd{lr =, batch = B, seed =}: GD on mini-batches of B samples drawn each step (with
-- replacement, from the seed and the step number). The objective must have samples
-- (least squares, logistic).
function M.sgd(opts)
  return builtin("sgd", opts, function(fname, o, args)
    args.batch = math.tointeger(check_number(fname, o, "batch", 1, 1, false))
    if not args.batch then fail(fname, "option 'batch' must be an integer") end
    args.seed = math.tointeger(o.seed or 0)
    if not args.seed then fail(fname, "option 'seed' must be an integer") end
  end)
end

local function beta_check(fname, o, args) args.beta = check_number(fname, o, "beta", 0.9, 0, false) end

--- momentum{lr =, beta = 0.9 [, nesterov = true]}: heavy ball m' = beta m + g, w' = w - lr m';
-- Nesterov: w' = w - lr (g + beta m'). beta is a meta-parameter too.
function M.momentum(opts) return builtin("momentum", opts, beta_check) end

--- nesterov{lr =, beta = 0.9}: momentum{nesterov = true}.
function M.nesterov(opts) return builtin("nesterov", opts, beta_check) end

--- rmsprop{lr =, rho = 0.99, eps = 1e-8}: v' = rho v + (1 - rho) g^2, w' = w - lr g / (sqrt(v') + eps).
function M.rmsprop(opts)
  return builtin("rmsprop", opts, function(fname, o, args)
    args.rho = check_number(fname, o, "rho", 0.99, 0, false)
    args.eps = check_number(fname, o, "eps", 1e-8, 0, true)
    if args.rho >= 1 then fail(fname, "rho must be < 1") end
  end)
end

--- adam{lr =, beta1 = 0.9, beta2 = 0.999, eps = 1e-8}: Adam with bias correction (counting the
-- updates made). Only lr (or log_lr) is a meta-parameter; betas and eps are fixed.
function M.adam(opts)
  return builtin("adam", opts, function(fname, o, args)
    args.beta1 = check_number(fname, o, "beta1", 0.9, 0, false)
    args.beta2 = check_number(fname, o, "beta2", 0.999, 0, false)
    args.eps = check_number(fname, o, "eps", 1e-8, 0, true)
    if args.beta1 >= 1 or args.beta2 >= 1 then fail(fname, "beta1 and beta2 must be < 1") end
  end)
end

local MAXSTATE = 8

--- new{name =, theta = {...}, init = f(w, theta) -> state, step = f(theta, state, w, fw, gw, t) -> w', state'}
-- defines an optimizer in Lua. theta: initial values (numbers or tensors); the step receives
-- them as tensors (traced by the meta-gradient methods), so write it with tensor operations.
-- state: a table of at most 8 tensors (numbers become 0-d tensors); step may return nil for
-- an unchanged state. Parameters named lr and beta are kept >= 0 (finite differences and
-- meta.train respect that).
function M.new(def)
  if type(def) ~= "table" then fail("optim.new", "expected a table, got %s", type(def)) end
  for k in pairs(def) do
    if k ~= "name" and k ~= "theta" and k ~= "init" and k ~= "step" then
      fail("optim.new", "unknown field '%s' (expected name, theta, init, step)%s", tostring(k),
           util.suggest(k, {"name", "theta", "init", "step"}))
    end
  end
  if def.name ~= nil and (type(def.name) ~= "string" or #def.name == 0 or #def.name > 31) then
    fail("optim.new", "field 'name' must be a string of 1 to 31 bytes, got %s",
         type(def.name) == "string" and ("'" .. def.name .. "'") or type(def.name))
  end
  if def.init ~= nil and type(def.init) ~= "function" then
    fail("optim.new", "field 'init' must be a function, got %s", type(def.init))
  end
  if type(def.step) ~= "function" then fail("optim.new", "field 'step' must be a function, got %s", type(def.step)) end
  if def.theta ~= nil and type(def.theta) ~= "table" then
    fail("optim.new", "field 'theta' must be a table of numbers, got %s", type(def.theta))
  end
  local theta = def.theta or {}
  local names = {}
  for k in pairs(theta) do
    if type(k) ~= "string" then fail("optim.new", "meta-parameter names must be strings, got %s", type(k)) end
    names[#names + 1] = k
  end
  table.sort(names)
  local user_init = def.init or function() return {} end
  local o = {name = def.name or "custom", kind = "custom", theta = {}, params = names, step = def.step,
             init = user_init}
  -- copies: later writes to the caller's tensors do not change the optimizer
  for k, v in pairs(theta) do o.theta[k] = is_tensor(v) and v:clone() or v end
  -- the engine wants numbers as tensors; a bad entry is refused by meta with its name
  o._invalid = nil
  local params = {}
  for i, k in ipairs(names) do
    local v = o.theta[k]
    if type(v) ~= "number" and not is_tensor(v) then
      o._invalid = ("meta-parameter '%s' must be a number, got %s"):format(k, type(v))
      v = 0
    end
    params[i] = {name = k, init = is_tensor(v) and v or core.tensor(v),
                 lo = (k == "lr" or k == "beta") and 0 or nil}
  end
  local keys = {} -- state keys in slot order, fixed by the last init
  local oname = o.name -- the closures below capture this, not o: the engine holds them
  local zero = core.tensor(0)
  local function named(list)
    local t = {}
    for i, k in ipairs(names) do t[k] = list[i] end
    return t
  end
  local function to_list(st, what)
    if type(st) ~= "table" then
      raise("", "optim '%s': %s must return the state as a table, got %s", oname, what, type(st))
    end
    local list = {}
    for i, k in ipairs(keys) do
      local v = st[k]
      if type(v) == "number" then v = core.tensor(v) end
      if not is_tensor(v) then
        raise("", "optim '%s': state entry '%s' must be a tensor or a number, got %s", oname, tostring(k), type(v))
      end
      list[i] = v
    end
    for i = #keys + 1, MAXSTATE do list[i] = zero end
    return list
  end
  local function init(w, theta_list)
    local st = user_init(w, named(theta_list)) or {}
    if type(st) ~= "table" then
      raise("", "optim '%s': init must return the state as a table, got %s", oname, type(st))
    end
    keys = {}
    for k in pairs(st) do keys[#keys + 1] = k end
    table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
    if #keys > MAXSTATE then
      raise("", "optim '%s': the state holds at most %d entries, got %d", oname, MAXSTATE, #keys)
    end
    return to_list(st, "init")
  end
  local user_step = def.step
  local function step(t, _, _, w, fw, gw, theta_list, state_list)
    local st = {}
    for i, k in ipairs(keys) do st[k] = state_list[i] end
    local wn, st2 = user_step(named(theta_list), st, w, fw, gw, t)
    return wn, to_list(st2 == nil and st or st2, "step")
  end
  o.c = core.optim_new{name = o.name, params = params, nstate = MAXSTATE, init = init, step = step}
  return o
end

-- ---------------------------------------------------------------- learned optimizers

local LEARNED_KNOWN = {
  mlp = {"seed", "hidden", "step_scale", "exp_scale", "batch", "batch_seed", "theta"},
  lstm = {"seed", "hidden", "layers", "step_scale", "batch", "batch_seed", "theta"},
}

local function check_integer(fname, opts, key, lo, hi)
  local v = opts[key]
  if v == nil then return nil end
  if math.type(v) ~= "integer" and not (type(v) == "number" and math.tointeger(v)) then
    fail(fname, "option '%s' must be an integer, got %s", key, util.show(v))
  end
  v = math.tointeger(v)
  if v < lo or (hi and v > hi) then
    fail(fname, "option '%s' must be in [%d, %s], got %d", key, lo, hi and tostring(hi) or "inf", v)
  end
  return v
end

-- A learned optimizer's table: the engine handle plus save (its theta by name, or given ones).
local function wrap_learned(c, kind)
  local o = wrap(c, "learned_" .. kind)
  o.options = core.optim_learned_options(c)
  --- opt:save(path [, theta]): writes the optimizer (kind, options, theta: the given values by
  -- name, e.g. meta.train's result.theta, else its own) to path. Returns true, or nil and a
  -- message when the file cannot be written. ms.optim.load(path) reads it back.
  function o.save(self, path, theta)
    if type(self) ~= "table" or self.c == nil then fail("optim.save", "call it as opt:save(path)") end
    if type(path) ~= "string" then fail("optim.save", "path must be a string, got %s", type(path)) end
    if theta ~= nil and type(theta) ~= "table" then
      fail("optim.save", "theta must be a table of tensors by name, got %s", type(theta))
    end
    local list = {}
    for i, name in ipairs(self.params) do
      local v = theta and theta[name] or self.theta[name]
      if not is_tensor(v) then fail("optim.save", "theta '%s' must be a tensor, got %s", name, type(v)) end
      list[i] = v
    end
    return core.optim_save(self.c, path, list)
  end
  return o
end

local function learned(kind, opts)
  local fname = "optim.learned_" .. kind
  opts = opts or {}
  if type(opts) ~= "table" then fail(fname, "expected an options table, got %s", type(opts)) end
  check_known(fname, opts, LEARNED_KNOWN[kind])
  local args = {
    seed = check_integer(fname, opts, "seed", 0),
    hidden = check_integer(fname, opts, "hidden", kind == "mlp" and 2 or 1, 4096),
    layers = check_integer(fname, opts, "layers", 1, 2),
    batch = check_integer(fname, opts, "batch", 0),
    batch_seed = check_integer(fname, opts, "batch_seed", 0),
  }
  if opts.step_scale ~= nil then args.step_scale = check_number(fname, opts, "step_scale", nil, 0, true) end
  if opts.exp_scale ~= nil then args.exp_scale = check_number(fname, opts, "exp_scale", nil, 0, true) end
  local c = core.optim_learned(kind, args)
  if opts.theta ~= nil then
    if type(opts.theta) ~= "table" then
      fail(fname, "option 'theta' must be a table of tensors by name, got %s", type(opts.theta))
    end
    local list, names = {}, {}
    for i, p in ipairs(c:params()) do
      names[p.name] = true
      local v = opts.theta[p.name]
      if not is_tensor(v) then fail(fname, "option 'theta' needs a tensor '%s', got %s", p.name, type(v)) end
      list[i] = v
    end
    for k in pairs(opts.theta) do
      if not names[k] then fail(fname, "option 'theta' has an unknown meta-parameter '%s'", tostring(k)) end
    end
    args.theta = list
    c = core.optim_learned(kind, args)
  end
  return wrap_learned(c, kind)
end

--- learned_mlp{seed =, hidden = 32, step_scale = 0.001, exp_scale = 0.001, batch =, batch_seed =,
-- theta = {w1 =, w1t =, b1 =, w2 =, b2 =}}: the per-parameter MLP optimizer after Metz et al.
-- (2019), applied to every coordinate with shared weights (engine/include/metastep/learned.h):
-- inputs g, w, momentum and second-moment averages at decays 0.5..0.9999, 1/sqrt(v), m/sqrt(v),
-- each normalised over the coordinates, and tanh embeddings of the step count; one hidden ReLU
-- layer; w' = w - step_scale d exp(exp_scale s). Seeded, descent-like initial theta. batch > 0:
-- mini-batch gradients of that many samples (the objective must have samples).
function M.learned_mlp(opts) return learned("mlp", opts) end

--- learned_lstm{seed =, hidden = 20, layers = 2, step_scale = 0.1, batch =, batch_seed =, theta =}:
-- the per-parameter LSTM optimizer after Andrychowicz et al. (2016), with the log-magnitude and
-- sign preprocessing of the gradient (p = 10); w' = w + step_scale * output.
function M.learned_lstm(opts) return learned("lstm", opts) end

--- load(path): the learned optimizer saved by opt:save(path), with the saved theta as its
-- initial values; nil and a message when the file cannot be read or is not one.
function M.load(path)
  if type(path) ~= "string" then fail("optim.load", "path must be a string, got %s", type(path)) end
  local c, err = core.optim_load(path)
  if not c then return nil, err end
  return wrap_learned(c, c:name() == "learned_mlp" and "mlp" or "lstm")
end

return M
