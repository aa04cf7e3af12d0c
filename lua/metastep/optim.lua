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

return M
