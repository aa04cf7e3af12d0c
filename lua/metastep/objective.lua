--- Objectives: value, gradient and Hessian-vector product of a function of w.
-- One objective type: the engine's C objective (the metastep.Objective userdata of
-- lua/src/lms_objective.c); every constructor here returns it. Methods: obj:value(w) (0-d
-- tensor), obj:grad(w), obj:hvp(w, v), obj:dim(), obj:name(), and for least squares and
-- logistic regression obj:minibatch(idx) (the same objective on the rows idx, 1-based) and
-- obj:grad_batch(w, idx); for a quadratic obj:parts(), obj:eigh() and obj:check_psd(what).
-- All are written with differentiable tensor operations, so tapes and forward levels see
-- through them (meta-gradients differentiate through obj:grad).
-- Read-only fields: obj.kind ("quadratic", "least_squares", "logistic", "function"),
-- obj.H, obj.wstar, obj.fstar (quadratic), obj.X, obj.y, obj.n, obj.l2 (least squares and
-- logistic; l2 for logistic only). Any other field can be set (obj.eigenvalues = ...).
-- C hosts add objectives with ms_objective_new; Lua code with from_function.
local core = require "metastep.core"
local util = require "metastep.util"
local raise = util.raise

local M = {}

local function shape_str(t)
  return "[" .. table.concat(t:shape(), ",") .. "]"
end

--- quadratic(H [, {wstar =, fstar = 0}]): f(w) = 1/2 (w - w*)^T H (w - w*) + f*.
-- H must be square, finite and symmetric (the objective keeps a copy). kind = "quadratic";
-- obj.H, obj.wstar, obj.fstar.
M.quadratic = core.objective_quadratic

--- least_squares(X [n,d], y [n]): f(w) = 1/(2n) |X w - y|^2. obj.X, obj.y, obj.n.
M.least_squares = core.objective_least_squares

--- logistic(X [n,d], y [n] in {0, 1} [, l2 = 0]): mean log(1 + exp(-s x^T w)) + l2/2 |w|^2,
-- s = 2y - 1. obj.X, obj.y, obj.n, obj.l2.
M.logistic = core.objective_logistic

-- Calls a C constructor from a Lua one and blames its errors on the first caller outside
-- the library.
local function call_blamed(f, ...)
  local ok, res = pcall(f, ...)
  if not ok then raise("", "%s", res) end
  return res
end

--- random_quadratic{d =, eigenvalues = {lo, hi} or tensor, spacing = "uniform"|"linspace", seed =,
--   wstar =}: H = Q diag(lambda) Q^T with Q a random rotation (QR of a Gaussian matrix).
-- The objective also carries .eigenvalues (tensor) and .Q.
function M.random_quadratic(opts)
  if type(opts) ~= "table" then raise("", "%s", "objective.random_quadratic: expected an options table") end
  util.check_keys(opts, {"d", "eigenvalues", "spacing", "seed", "wstar"}, "objective.random_quadratic")
  local seed = opts.seed or 0
  local lam = opts.eigenvalues or {1, 10}
  local d = opts.d
  if getmetatable(lam) == core.Tensor_mt then
    d = lam:numel()
  elseif type(lam) ~= "table" then
    raise("", "objective.random_quadratic: eigenvalues must be {lo, hi} or a tensor, got %s", type(lam))
  else
    if type(d) ~= "number" or d < 1 or math.floor(d) ~= d then
      raise("", "objective.random_quadratic: d must be a positive integer, got %s", tostring(d))
    end
    local lo, hi = lam[1], lam[2]
    if type(lo) ~= "number" or type(hi) ~= "number" or lo < 0 or hi < lo then
      raise("", "%s", "objective.random_quadratic: eigenvalues must be {lo, hi} with 0 <= lo <= hi, or a tensor")
    end
    if (opts.spacing or "linspace") == "linspace" then
      lam = core.linspace(lo, hi, d)
    else
      lam = core.rand({d}, {seed = seed + 1, lo = lo, hi = hi})
    end
  end
  if opts.wstar ~= nil and getmetatable(opts.wstar) ~= core.Tensor_mt then
    raise("", "objective.random_quadratic: wstar must be a tensor, got %s", type(opts.wstar))
  end
  local Q = core.qr(core.randn({d, d}, {seed = seed}))
  local H = core.matmul(core.matmul(Q, core.diag(lam)), Q:t())
  H = (H + H:t()) * 0.5 -- exactly symmetric
  local obj = call_blamed(core.objective_quadratic, H, {wstar = opts.wstar})
  obj.eigenvalues, obj.Q = lam, Q
  return obj
end

--- from_function(f, {dim =, grad = g (optional), hvp = h (optional), name = "function"}):
-- an objective from a Lua function of a tensor returning a one-element tensor or a number.
-- Missing derivatives come from autodiff in the engine (grad by reverse mode over f, hvp by
-- forward mode over grad). Errors raised by f, grad or hvp reach the caller unchanged.
function M.from_function(f, opts)
  if type(f) ~= "function" then
    raise("", "objective.from_function: expected a function, got %s", type(f))
  end
  if opts ~= nil and type(opts) ~= "table" then
    raise("", "objective.from_function: options must be a table, got %s", type(opts))
  end
  opts = opts or {}
  util.check_keys(opts, {"dim", "name", "grad", "hvp"}, "objective.from_function")
  local d = opts.dim
  if type(d) ~= "number" or d < 1 or math.floor(d) ~= d then
    raise("", "objective.from_function: option 'dim' must be a positive integer, got %s", tostring(d))
  end
  local name = opts.name or "function"
  if type(name) ~= "string" then
    raise("", "objective.from_function: option 'name' must be a string, got %s", type(name))
  end
  for _, k in ipairs{"grad", "hvp"} do
    if opts[k] ~= nil and type(opts[k]) ~= "function" then
      raise("", "objective.from_function: option '%s' must be a function, got %s", k, type(opts[k]))
    end
  end
  local function value(w)
    local v = f(w)
    if type(v) == "number" then
      if core.ad_depth() > 0 then
        raise("", "%s: the objective function returned a Lua number while being differentiated; " ..
          "return a tensor (a number from :item() carries no derivative)", name)
      end
      return core.tensor(v)
    end
    if getmetatable(v) ~= core.Tensor_mt or v:numel() ~= 1 then
      raise("", "%s: the objective function must return a number or a one-element tensor, got %s",
        name, getmetatable(v) == core.Tensor_mt and ("shape " .. shape_str(v)) or type(v))
    end
    return v
  end
  return call_blamed(core.objective_from_callbacks, {name = name, dim = math.tointeger(d), value = value,
    grad = opts.grad, hvp = opts.hvp, propagate_errors = true})
end

--- Task distributions.
M.tasks = {}

-- The position of each built-in sampler (how many tasks it has drawn), so a meta-training
-- checkpoint can save it and a resume can continue the same sequence of tasks.
local positions = setmetatable({}, {__mode = "k"})

--- tasks.position(sampler): the number of tasks a built-in sampler has drawn (nil for any
-- other function).
function M.tasks.position(sampler)
  local p = positions[sampler]
  return p and p.get() or nil
end

--- tasks.set_position(sampler, n): the next task drawn is task n + 1 (built-in samplers only).
function M.tasks.set_position(sampler, n)
  local p = positions[sampler]
  if not p then raise("", "%s", "tasks.set_position: not a sampler made by ms.tasks") end
  if math.type(n) ~= "integer" or n < 0 then
    raise("", "tasks.set_position: position must be an integer >= 0, got %s", tostring(n))
  end
  p.set(n)
end

--- tasks.least_squares{d =, n_train =, n_valid = 0, n_test = 1000, sigma = 1, seed = 0,
--   wstar = "sphere" | "gaussian"}: a sampler; sampler() returns a fresh task:
-- {wstar, train = {X, y}, valid = {X, y}, test = {X, y}, objective (train), valid_objective,
--  test_objective, index}. x ~ N(0, I_d); y = <w*, x> + sigma * N(0, 1); w* uniform on the
-- unit sphere ("sphere", the paper's choice) or N(0, I/d). Task k of a sampler is the same
-- on every machine for the same seed.
function M.tasks.least_squares(opts)
  if type(opts) ~= "table" then raise("", "%s", "tasks.least_squares: expected an options table") end
  util.check_keys(opts, {"d", "n_train", "n_valid", "n_test", "sigma", "seed", "wstar"}, "tasks.least_squares")
  local function int(key, default, lo)
    local v = opts[key] == nil and default or opts[key]
    if math.type(v) ~= "integer" and not (type(v) == "number" and v == math.floor(v)) then
      raise("", "tasks.least_squares: option '%s' must be an integer, got %s", key, tostring(v))
    end
    if v < lo then raise("", "tasks.least_squares: option '%s' must be >= %d, got %d", key, lo, v) end
    return math.tointeger(v)
  end
  local d, ntr = int("d", nil, 1), int("n_train", nil, 1)
  local nva, nte = int("n_valid", 0, 0), int("n_test", 1000, 0)
  local sigma = opts.sigma or 1
  if type(sigma) ~= "number" or sigma < 0 or sigma ~= sigma then
    raise("", "tasks.least_squares: option 'sigma' must be a number >= 0, got %s", tostring(sigma))
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
  local function sampler()
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
  positions[sampler] = {get = function() return count end, set = function(n) count = n end}
  return sampler
end

--- tasks.quadratic{d =, eigenvalues = {lo, hi}, seed =}: a sampler of random quadratics with
-- a random w0 ~ N(0, I): sampler() returns {objective, w0, index}.
function M.tasks.quadratic(opts)
  if type(opts) ~= "table" then raise("", "%s", "tasks.quadratic: expected an options table") end
  util.check_keys(opts, {"d", "eigenvalues", "seed"}, "tasks.quadratic")
  local seed, count = opts.seed or 0, 0
  local function sampler()
    count = count + 1
    local s = seed * 1000003 + count * 16
    local obj = M.random_quadratic{d = opts.d, eigenvalues = opts.eigenvalues, seed = s}
    return {index = count, objective = obj, w0 = core.randn({obj:dim()}, {seed = s + 3})}
  end
  positions[sampler] = {get = function() return count end, set = function(n) count = n end}
  return sampler
end

--- mlp{layers =, X =, y =}: the mean softmax cross-entropy of an MLP classifier over its flat
-- parameter vector (see ms.nn.objective_mlp); mini-batches are rows of X.
function M.mlp(opts) return require("metastep.nn").objective_mlp(opts) end

return M
