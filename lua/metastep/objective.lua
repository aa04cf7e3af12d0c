--- Objectives: value, gradient and Hessian-vector product of a function of w.
-- Every objective has obj:value(w) (0-d tensor), obj:grad(w), obj:hvp(w, v), obj:dim()
-- and obj:name(); all are written with differentiable tensor operations, so tapes and
-- forward levels see through them (meta-gradients differentiate through obj:grad).
-- Built-ins: quadratic, least_squares, logistic are the engine's C objectives (registered
-- in engine/src/objective.c; obj.c is the C userdata); from_function wraps any Lua function
-- of a tensor (gradient and Hessian-vector product by autodiff). C hosts add objectives
-- with ms_objective_new; Lua code with from_function or any table with these methods.
local core = require "metastep.core"
local ad = require "metastep.autodiff"

local M = {}

local Objective = {}
Objective.__index = Objective
Objective.__name = "metastep.objective"

local function shape_str(t)
  return "[" .. table.concat(t:shape(), ",") .. "]"
end

function Objective:dim() return self._dim end
function Objective:name() return self._name end

-- Checks that w is a vector of the objective's dimension; level 3 points at the caller.
function Objective:_check(w, what)
  if getmetatable(w) ~= core.Tensor_mt then
    error(("%s.%s: w must be a tensor, got %s"):format(self._name, what, type(w)), 3)
  end
  local s = w:shape()
  if #s ~= 1 or s[1] ~= self._dim then
    error(("%s.%s: w has shape %s, expected [%d]"):format(self._name, what, shape_str(w), self._dim), 3)
  end
end

function Objective:value(w) self:_check(w, "value"); return self._value(w) end
function Objective:grad(w) self:_check(w, "grad"); return self._grad(w) end
function Objective:hvp(w, v)
  self:_check(w, "hvp")
  self:_check(v, "hvp")
  if self._hvp then return self._hvp(w, v) end
  local _, hv = ad.jvp(self._grad, w, v)
  return hv
end

function Objective.__tostring(o)
  return ("objective %s (dim %d)"):format(o._name, o._dim)
end

local function new(name, dim, value, grad, hvp, extra)
  local o = setmetatable({_name = name, _dim = dim, _value = value, _grad = grad, _hvp = hvp}, Objective)
  for k, v in pairs(extra or {}) do o[k] = v end
  return o
end

local function check_tensor(fname, argname, t, ndim)
  if getmetatable(t) ~= core.Tensor_mt then
    error(("%s: %s must be a tensor, got %s"):format(fname, argname, type(t)), 3)
  end
  if ndim and t:ndim() ~= ndim then
    error(("%s: %s must be %d-dimensional, got shape %s"):format(fname, argname, ndim, shape_str(t)), 3)
  end
end

--- quadratic(H [, {wstar =, fstar = 0}]): f(w) = 1/2 (w - w*)^T H (w - w*) + f*.
-- H must be square and symmetric. kind = "quadratic"; obj.H, obj.wstar, obj.fstar.
function M.quadratic(H, opts)
  check_tensor("objective.quadratic", "H", H, 2)
  local d = H:shape()[1]
  if H:shape()[2] ~= d then
    error(("objective.quadratic: H must be square, got shape %s"):format(shape_str(H)), 2)
  end
  if not core.all_finite(H) then error("objective.quadratic: H has non-finite entries", 2) end
  local asym = core.max_abs_diff(H, H:t())
  if asym > 1e-10 * math.max(1, core.max(core.abs(H)):item()) then
    error(("objective.quadratic: H must be symmetric (max |H - H^T| = %g)"):format(asym), 2)
  end
  opts = opts or {}
  local wstar, fstar = opts.wstar, opts.fstar or 0
  if wstar ~= nil then
    check_tensor("objective.quadratic", "wstar", wstar, 1)
    if wstar:shape()[1] ~= d then
      error(("objective.quadratic: wstar has shape %s, expected [%d]"):format(shape_str(wstar), d), 2)
    end
  end
  if type(fstar) ~= "number" then error("objective.quadratic: fstar must be a number", 2) end
  -- private copies, like the C objective's: writing to the caller's H later changes nothing
  H = H:clone()
  if wstar then wstar = wstar:clone() end
  local c = core.objective_quadratic(H, {wstar = wstar, fstar = fstar})
  return new("quadratic", d,
    function(w) return c:value(w) end,
    function(w) return c:grad(w) end,
    function(w, v) return c:hvp(w, v) end,
    {kind = "quadratic", H = H, wstar = wstar, fstar = fstar, c = c})
end

--- random_quadratic{d =, eigenvalues = {lo, hi} or tensor, spacing = "uniform"|"linspace", seed =}
-- H = Q diag(lambda) Q^T with Q a random rotation (QR of a Gaussian matrix).
-- The objective also carries .eigenvalues (tensor) and .Q.
function M.random_quadratic(opts)
  if type(opts) ~= "table" then error("objective.random_quadratic: expected an options table", 2) end
  local seed = opts.seed or 0
  local lam = opts.eigenvalues or {1, 10}
  local d = opts.d
  if getmetatable(lam) == core.Tensor_mt then
    d = lam:numel()
  else
    if type(d) ~= "number" or d < 1 or math.floor(d) ~= d then
      error(("objective.random_quadratic: d must be a positive integer, got %s"):format(tostring(d)), 2)
    end
    local lo, hi = lam[1], lam[2]
    if type(lo) ~= "number" or type(hi) ~= "number" or lo < 0 or hi < lo then
      error("objective.random_quadratic: eigenvalues must be {lo, hi} with 0 <= lo <= hi, or a tensor", 2)
    end
    if (opts.spacing or "linspace") == "linspace" then
      lam = core.linspace(lo, hi, d)
    else
      lam = core.rand({d}, {seed = seed + 1, lo = lo, hi = hi})
    end
  end
  local Q = core.qr(core.randn({d, d}, {seed = seed}))
  local H = core.matmul(core.matmul(Q, core.diag(lam)), Q:t())
  H = (H + H:t()) * 0.5 -- exactly symmetric
  local obj = M.quadratic(H, {wstar = opts.wstar})
  obj.eigenvalues, obj.Q = lam, Q
  return obj
end

--- least_squares(X [n,d], y [n]): f(w) = 1/(2n) |X w - y|^2.
function M.least_squares(X, y)
  check_tensor("objective.least_squares", "X", X, 2)
  check_tensor("objective.least_squares", "y", y, 1)
  local n, d = X:shape()[1], X:shape()[2]
  if y:shape()[1] ~= n then
    error(("objective.least_squares: X has %d rows but y has shape %s"):format(n, shape_str(y)), 2)
  end
  if n < 1 then error("objective.least_squares: needs at least one sample", 2) end
  local c = core.objective_least_squares(X, y)
  local o = new("least_squares", d,
    function(w) return c:value(w) end,
    function(w) return c:grad(w) end,
    function(w, v) return c:hvp(w, v) end,
    {kind = "least_squares", X = X, y = y, n = n, c = c})
  --- The same objective on the rows idx (a table of 1-based indices).
  function o:minibatch(idx)
    local rows, ys = {}, {}
    for k, i in ipairs(idx) do rows[k] = X:select(1, i):reshape(1, d); ys[k] = y:slice(1, i, i) end
    return M.least_squares(core.cat(rows, 1), core.cat(ys, 1))
  end
  return o
end

--- logistic(X [n,d], y [n] in {0, 1} [, l2 = 0]): mean log(1 + exp(-s x^T w)) + l2/2 |w|^2,
-- s = 2y - 1.
function M.logistic(X, y, l2)
  check_tensor("objective.logistic", "X", X, 2)
  check_tensor("objective.logistic", "y", y, 1)
  local n, d = X:shape()[1], X:shape()[2]
  if y:shape()[1] ~= n then
    error(("objective.logistic: X has %d rows but y has shape %s"):format(n, shape_str(y)), 2)
  end
  local bad = core.max(core.abs(y * (y - 1))):item()
  if bad ~= 0 then error("objective.logistic: labels y must be 0 or 1", 2) end
  l2 = l2 or 0
  if type(l2) ~= "number" or l2 < 0 then error("objective.logistic: l2 must be a number >= 0", 2) end
  local c = core.objective_logistic(X, y, l2)
  local o = new("logistic", d,
    function(w) return c:value(w) end,
    function(w) return c:grad(w) end,
    function(w, v) return c:hvp(w, v) end,
    {kind = "logistic", X = X, y = y, n = n, l2 = l2, c = c})
  function o:minibatch(idx)
    local rows, ys = {}, {}
    for k, i in ipairs(idx) do rows[k] = X:select(1, i):reshape(1, d); ys[k] = y:slice(1, i, i) end
    return M.logistic(core.cat(rows, 1), core.cat(ys, 1), l2)
  end
  return o
end

--- from_function(f, {dim =, grad = g (optional), hvp = h (optional), name =}):
-- an objective from a Lua function of a tensor returning a one-element tensor or a number.
-- Missing derivatives come from autodiff (grad by the tape, hvp forward-over-reverse).
function M.from_function(f, opts)
  if type(f) ~= "function" then
    error(("objective.from_function: expected a function, got %s"):format(type(f)), 2)
  end
  opts = opts or {}
  local d = opts.dim
  if type(d) ~= "number" or d < 1 or math.floor(d) ~= d then
    error(("objective.from_function: option 'dim' must be a positive integer, got %s"):format(tostring(d)), 2)
  end
  local name = opts.name or "function"
  local function value(w)
    local v = f(w)
    if type(v) == "number" then
      if core.ad_depth() > 0 then
        error(("%s: the objective function returned a Lua number while being differentiated; " ..
          "return a tensor (a number from :item() carries no derivative)"):format(name), 0)
      end
      return core.tensor(v)
    end
    if getmetatable(v) ~= core.Tensor_mt or v:numel() ~= 1 then
      error(("%s: the objective function must return a number or a one-element tensor, got %s"):format(
        name, getmetatable(v) == core.Tensor_mt and ("shape " .. shape_str(v)) or type(v)), 0)
    end
    return v
  end
  return new(name, d, value, opts.grad or ad.grad(value), opts.hvp, {kind = "function"})
end

--- Task distributions.
M.tasks = {}

--- tasks.least_squares{d =, n_train =, n_valid = 0, n_test = 1000, sigma = 1, seed = 0,
--   wstar = "sphere" | "gaussian"}: a sampler; sampler() returns a fresh task:
-- {wstar, train = {X, y}, valid = {X, y}, test = {X, y}, objective (train), valid_objective,
--  test_objective, index}. x ~ N(0, I_d); y = <w*, x> + sigma * N(0, 1); w* uniform on the
-- unit sphere ("sphere", the paper's choice) or N(0, I/d). Task k of a sampler is the same
-- on every machine for the same seed.
function M.tasks.least_squares(opts)
  if type(opts) ~= "table" then error("tasks.least_squares: expected an options table", 2) end
  local function int(key, default, lo)
    local v = opts[key] == nil and default or opts[key]
    if math.type(v) ~= "integer" and not (type(v) == "number" and v == math.floor(v)) then
      error(("tasks.least_squares: option '%s' must be an integer, got %s"):format(key, tostring(v)), 3)
    end
    if v < lo then error(("tasks.least_squares: option '%s' must be >= %d, got %d"):format(key, lo, v), 3) end
    return math.tointeger(v)
  end
  local d, ntr = int("d", nil, 1), int("n_train", nil, 1)
  local nva, nte = int("n_valid", 0, 0), int("n_test", 1000, 0)
  local sigma = opts.sigma or 1
  if type(sigma) ~= "number" or sigma < 0 or sigma ~= sigma then
    error(("tasks.least_squares: option 'sigma' must be a number >= 0, got %s"):format(tostring(sigma)), 2)
  end
  local seed = int("seed", 0, 0)
  local kind = opts.wstar or "sphere"
  local count = 0
  local function split(n, s, wstar)
    if n == 0 then return nil end
    local X = core.randn({n, d}, {seed = s})
    local y = core.matvec(X, wstar) + core.randn({n}, {seed = s + 1, std = sigma})
    return {X = X, y = y}
  end
  return function()
    count = count + 1
    local base = seed * 1000003 + count * 16
    local wstar = core.randn({d}, {seed = base})
    if kind == "sphere" then wstar = wstar / wstar:norm() else wstar = wstar * (1 / math.sqrt(d)) end
    local task = {index = count, wstar = wstar, sigma = sigma,
                  train = split(ntr, base + 2, wstar), valid = split(nva, base + 4, wstar),
                  test = split(nte, base + 6, wstar)}
    task.objective = M.least_squares(task.train.X, task.train.y)
    if task.valid then task.valid_objective = M.least_squares(task.valid.X, task.valid.y) end
    if task.test then task.test_objective = M.least_squares(task.test.X, task.test.y) end
    return task
  end
end

--- tasks.quadratic{d =, eigenvalues = {lo, hi}, seed =}: a sampler of random quadratics with
-- a random w0 ~ N(0, I): sampler() returns {objective, w0, index}.
function M.tasks.quadratic(opts)
  if type(opts) ~= "table" then error("tasks.quadratic: expected an options table", 2) end
  local seed, count = opts.seed or 0, 0
  return function()
    count = count + 1
    local s = seed * 1000003 + count * 16
    local obj = M.random_quadratic{d = opts.d, eigenvalues = opts.eigenvalues, seed = s}
    return {index = count, objective = obj, w0 = core.randn({obj:dim()}, {seed = s + 3})}
  end
end

return M
