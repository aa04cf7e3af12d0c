--- Optimizers as boxes with meta-parameters theta.
-- An optimizer is a table with
--   name, theta (default meta-parameters: a table of numbers),
--   init(w, theta) -> state,
--   step(theta, state, w, fw, gw, t) -> w', state'   (a pure function: it returns a new state)
-- theta entries are numbers or 0-d tensors: meta-gradient methods pass tracked tensors,
-- so every step must be written with metastep tensor operations.
local ms_core = require "metastep.core"

local M = {}

-- level: the error level of the user's call (3 when called from a constructor directly,
-- 4 from base). NaN prints as "nan" (tostring gives "-nan" on x86).
local function check_number(fname, opts, key, default, lo, lo_open, level)
  level = level or 3
  local v = opts[key]
  if v == nil then v = default end
  if type(v) ~= "number" then
    error(("%s: option '%s' must be a number, got %s"):format(fname, key, type(v)), level)
  end
  if v ~= v or v == math.huge or v == -math.huge then
    error(("%s: option '%s' must be finite, got %s"):format(fname, key, v ~= v and "nan" or tostring(v)), level)
  end
  if lo and (v < lo or (lo_open and v == lo)) then
    error(("%s: option '%s' must be %s %g, got %g"):format(fname, key, lo_open and ">" or ">=", lo, v), level)
  end
  return v
end

-- The step size at step t: lr (or exp(log_lr)) times the schedule's factor.
local function step_size(opt, theta, t)
  local lr
  if opt.log_lr then
    lr = theta.log_lr
    lr = type(lr) == "number" and math.exp(lr) or ms_core.exp(lr)
  else
    lr = theta.lr
  end
  if opt.schedule then lr = lr * opt.schedule(t) end
  return lr
end

-- Shared construction: lr given directly or log-parametrized, optional schedule.
local function base(fname, opts, extra)
  opts = opts or {}
  if type(opts) ~= "table" then error(("%s: expected an options table, got %s"):format(fname, type(opts)), 3) end
  local o = {name = fname:match("optim%.(.*)") or fname, log_lr = opts.log_lr and true or false}
  -- log(0) = -inf would only be refused later, by meta, far from the cause
  local lr = check_number(fname, opts, "lr", extra and extra.lr_default or nil, 0, o.log_lr, 4)
  o.theta = {}
  if o.log_lr then o.theta.log_lr = math.log(lr) else o.theta.lr = lr end
  if opts.schedule ~= nil then
    local s = opts.schedule
    if type(s) == "table" then
      if #s == 0 then error(("%s: option 'schedule' must not be an empty table"):format(fname), 3) end
      for i = 1, #s do
        if type(s[i]) ~= "number" then
          error(("%s: option 'schedule' must hold numbers, entry %d is a %s"):format(fname, i, type(s[i])), 3)
        end
      end
      local tbl = table.move(s, 1, #s, 1, {}) -- a copy: later edits of the caller's table do not leak in
      s = function(t) return tbl[t] or tbl[#tbl] end
    elseif type(s) ~= "function" then
      error(("%s: option 'schedule' must be a function of the step or a table of factors, got %s"):format(fname, type(s)), 3)
    end
    o.schedule = s
  end
  o.lr_at = function(theta, t) return step_size(o, theta, t) end
  return o
end

--- gd{lr = 0.1 [, log_lr = true] [, schedule = f(t) or {factors}]}: w' = w - lr g.
function M.gd(opts)
  local o = base("optim.gd", opts)
  o.kind = "gd"
  function o.init() return {} end
  function o.step(theta, state, w, _, g, t)
    return w - g * o.lr_at(theta, t), state
  end
  return o
end

--- sgd{lr =, batch = B, seed =}: GD on mini-batches of B samples drawn each step.
-- The objective must support :minibatch(idx) (least squares and logistic do).
function M.sgd(opts)
  local o = base("optim.sgd", opts)
  o.kind = "sgd"
  o.batch = math.tointeger(check_number("optim.sgd", opts, "batch", 1, 1))
  if not o.batch then error("optim.sgd: option 'batch' must be an integer", 2) end
  o.seed = math.tointeger(opts.seed or 0) or error("optim.sgd: option 'seed' must be an integer", 2)
  o.stochastic = true
  function o.init() return {draw = 0} end
  function o.step(theta, state, w, _, g, t)
    return w - g * o.lr_at(theta, t), {draw = state.draw + 1}
  end
  return o
end

--- momentum{lr =, beta = 0.9}: m' = beta m + g, w' = w - lr m' (heavy ball).
function M.momentum(opts)
  local o = base("optim.momentum", opts)
  o.kind = "momentum"
  o.theta.beta = check_number("optim.momentum", opts, "beta", 0.9, 0)
  function o.init(w) return {m = ms_core.zeros(w:shape())} end
  function o.step(theta, state, w, _, g, t)
    local m = state.m * theta.beta + g
    return w - m * o.lr_at(theta, t), {m = m}
  end
  return o
end

--- adam{lr =, beta1 = 0.9, beta2 = 0.999, eps = 1e-8}: Adam with bias correction.
-- Only lr (or log_lr) is a meta-parameter; betas and eps are fixed hyper-parameters.
function M.adam(opts)
  local o = base("optim.adam", opts)
  o.kind = "adam"
  local b1 = check_number("optim.adam", opts, "beta1", 0.9, 0)
  local b2 = check_number("optim.adam", opts, "beta2", 0.999, 0)
  local eps = check_number("optim.adam", opts, "eps", 1e-8, 0, true)
  if b1 >= 1 or b2 >= 1 then error("optim.adam: beta1 and beta2 must be < 1", 2) end
  function o.init(w) return {m = ms_core.zeros(w:shape()), v = ms_core.zeros(w:shape())} end
  function o.step(theta, state, w, _, g, t)
    local m = state.m * b1 + g * (1 - b1)
    local v = state.v * b2 + ms_core.square(g) * (1 - b2)
    local mhat = m / (1 - b1 ^ t)
    local vhat = v / (1 - b2 ^ t)
    -- sqrt has an infinite derivative at 0: take it only where vhat > 0 (0 elsewhere), so
    -- a coordinate whose gradient is exactly 0 gives a finite meta-gradient, not 0 * inf
    local pos = ms_core.gt(vhat, 0)
    local root = ms_core.where(pos, ms_core.sqrt(ms_core.where(pos, vhat, 1)), 0)
    return w - mhat / (root + eps) * o.lr_at(theta, t), {m = m, v = v}
  end
  return o
end

--- new{name =, theta = {...}, init = f(w, theta) -> state, step = f(theta, state, w, fw, gw, t) -> w', state'}
-- defines an optimizer in Lua.
function M.new(def)
  if type(def) ~= "table" then error(("optim.new: expected a table, got %s"):format(type(def)), 2) end
  if type(def.step) ~= "function" then
    error(("optim.new: field 'step' must be a function, got %s"):format(type(def.step)), 2)
  end
  if def.theta ~= nil and type(def.theta) ~= "table" then
    error(("optim.new: field 'theta' must be a table of numbers, got %s"):format(type(def.theta)), 2)
  end
  local o = {name = def.name or "custom", kind = "custom", theta = def.theta or {}, step = def.step,
             init = def.init or function() return {} end}
  return o
end

return M
