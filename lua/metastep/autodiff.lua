--- Functional automatic differentiation, in the style of JAX and torch-autograd.
-- Functions receive and return ordinary tensors; inside a transformed function every
-- tensor operation is recorded without the user writing anything special. Transforms
-- nest to any order: grad(grad(f)), a grad inside a function passed to grad, jvp of grad.
local core = require "metastep.core"
local util = require "metastep.util"
local raise = util.raise

local M = {}

local function is_tensor(v)
  return getmetatable(v) == core.Tensor_mt
end

-- Replaces every tensor (or number) leaf of a structure by f(leaf), keeping the structure.
-- open holds the tables being walked: a table inside itself is refused ("cyclic table at
-- argument[1][2]") instead of recursing until memory or the C stack runs out.
local function map_leaves(x, f, path, open)
  if is_tensor(x) or type(x) == "number" then return f(x, path) end
  if type(x) == "table" then
    open = open or {}
    if open[x] then error(("cyclic table at argument%s"):format(path or ""), 0) end
    open[x] = true
    local out = {}
    for k, v in pairs(x) do out[k] = map_leaves(v, f, (path or "") .. "[" .. tostring(k) .. "]", open) end
    open[x] = nil
    return out
  end
  error(("expected a tensor, a number or a table of them at argument%s, got %s"):format(path or "", type(x)), 0)
end

-- Watches the differentiated arguments on level; returns the new args and the list of
-- (watched tensor, was-a-number) leaves in traversal order.
local function watch_args(level, args, argnums, tangents, fname)
  local leaves, wrapped = {}, {}
  for i = 1, args.n do wrapped[i] = args[i] end
  for j, i in ipairs(argnums) do
    if args[i] == nil then
      raise("", "%s: argument %d is nil (the function is differentiated with respect to it)", fname, i)
    end
    local tan = tangents and tangents[j]
    local ok, res = pcall(map_leaves, args[i], function(leaf, path)
      local v = tan
      if tan ~= nil and path then
        for key in path:gmatch("%[([^%]]+)%]") do
          if type(v) ~= "table" or is_tensor(v) then
            error(("the tangent has no entry at %s (its structure must match the argument's)"):format(path), 0)
          end
          v = v[tonumber(key) or key]
        end
      end
      if type(v) == "number" then v = core.tensor(v) end
      local w = level:watch(leaf, v)
      leaves[#leaves + 1] = {w, type(leaf) == "number"}
      return w
    end)
    if not ok then raise("", "%s: argument %d: %s", fname, i, res) end
    wrapped[i] = res
  end
  return wrapped, leaves
end

-- Puts values back into the structure of args[argnums] (numbers come back as numbers).
local function rebuild(args, argnums, values)
  local k = 0
  local outs = {}
  for j, i in ipairs(argnums) do
    outs[j] = map_leaves(args[i], function()
      k = k + 1
      local v = values[k]
      if type(v) ~= "number" and v.is_number then return v.t:item() end
      return v
    end)
  end
  return outs
end

local function normalize_argnums(opts, fname)
  if opts ~= nil and type(opts) ~= "table" then
    raise("", "%s: options must be a table, got %s", fname, type(opts))
  end
  util.check_keys(opts, {"argnums"}, fname)
  local argnums = opts and opts.argnums or 1
  if type(argnums) == "number" then argnums = {argnums} end
  if type(argnums) ~= "table" then
    raise("", "%s: option 'argnums' must be an integer or a table of integers, got %s", fname, type(argnums))
  end
  return argnums
end

local function check_fn(f, fname)
  if type(f) ~= "function" and not (getmetatable(f) or {}).__call then
    raise("", "%s: expected a function, got %s", fname, type(f))
  end
end

--- value_and_grad(f [, {argnums = 1}]) -> function(...) returning f(...) and its gradient
-- with respect to the argnums-th argument(s), in the same structure (tensor, number,
-- or table of tensors). f must return a one-element tensor or a number.
function M.value_and_grad(f, opts)
  check_fn(f, "value_and_grad")
  local argnums = normalize_argnums(opts, "value_and_grad")
  return function(...)
    local args = table.pack(...)
    local tape <close> = core.ad_push("reverse")
    local wrapped, leaves = watch_args(tape, args, argnums, nil, "grad")
    local y = f(table.unpack(wrapped, 1, args.n))
    tape:pop()
    if type(y) == "number" then
      -- a Lua number carries no derivative: returning one (often via :item()) would give a
      -- silent zero gradient
      raise("", "%s", "grad: the function returned a Lua number, which carries no derivative " ..
        "(return the tensor instead of calling :item())")
    end
    if not is_tensor(y) then
      raise("", "grad: the function must return a scalar tensor or a number, got %s", type(y))
    end
    if y:numel() ~= 1 then
      local s = y:shape()
      raise("", "grad: the function must return a scalar (one element), got shape [%s]", table.concat(s, ","))
    end
    local xs = {}
    for k, l in ipairs(leaves) do xs[k] = l[1] end
    local gs = util.engine(tape.gradient, tape, y, xs) -- a backward failure blames the caller
    local vals = {}
    for k, l in ipairs(leaves) do vals[k] = l[2] and {is_number = true, t = gs[k]} or gs[k] end
    local g = rebuild(args, argnums, vals)
    if #argnums == 1 then return y, g[1] end
    return y, table.unpack(g)
  end
end

--- grad(f [, {argnums = 1}]) -> function returning only the gradient.
function M.grad(f, opts)
  check_fn(f, "grad")
  normalize_argnums(opts, "grad") -- checked here to name grad in the message
  local vg = M.value_and_grad(f, opts)
  return function(...)
    return select(2, vg(...))
  end
end

--- jvp(f, x, v) -> f(x), J v (forward mode). x and v: tensors, numbers or tables of
-- them with the same structure; f returns a tensor (or a number).
function M.jvp(f, x, v)
  check_fn(f, "jvp")
  local level <close> = core.ad_push("forward")
  local args = table.pack(x)
  local wrapped = watch_args(level, args, {1}, {v}, "jvp")
  local y = f(wrapped[1])
  level:pop()
  if type(y) == "number" then return y, 0 end
  if not is_tensor(y) then
    raise("", "jvp: the function must return a tensor or a number, got %s", type(y))
  end
  return y, util.engine(level.tangent, level, y)
end

--- vjp(f, x) -> f(x), pullback; pullback(gy) returns J^T gy in the structure of x.
function M.vjp(f, x)
  check_fn(f, "vjp")
  local tape = core.ad_push("reverse")
  local ok, y, leaves, args = pcall(function()
    local a = table.pack(x)
    local w, l = watch_args(tape, a, {1}, nil, "vjp")
    return f(w[1]), l, a
  end)
  if not ok then
    tape:free()
    error(y, 0)
  end
  tape:pop()
  if not is_tensor(y) then
    tape:free()
    raise("", "vjp: the function must return a tensor, got %s", type(y))
  end
  local function pullback(gy)
    if type(gy) == "number" then gy = core.full(y:shape(), gy) end
    local xs = {}
    for k, l in ipairs(leaves) do xs[k] = l[1] end
    local gs = util.engine(tape.gradient, tape, y, xs, gy)
    local vals = {}
    for k, l in ipairs(leaves) do vals[k] = l[2] and {is_number = true, t = gs[k]} or gs[k] end
    return rebuild(args, {1}, vals)[1]
  end
  return y, pullback
end

--- hvp(f, x, v) -> H v, the Hessian of the scalar function f at x times v
-- (forward-over-reverse: the directional derivative of grad f along v).
function M.hvp(f, x, v)
  check_fn(f, "hvp")
  local _, hv = M.jvp(M.grad(f), x, v)
  return hv
end

--- stop_gradient(x): x's value with no derivative flowing through it.
M.stop_gradient = core.stop_gradient

--- custom{name =, nin =, forward = f(x...), vjp = f(g, out, x...) -> gx..., jvp = f(tx..., out, x...) -> tout}
-- defines a primitive usable inside grad/jvp like a built-in one.
M.custom = core.custom

--- check_grad(f, x [, {eps = 1e-6, rtol = 1e-6, atol = 1e-8}]) compares grad(f)(x) with
-- central differences of f. x: a tensor or a number. Returns ok, max_error, report:
-- max_error is max |analytic - numeric| / (atol + rtol * max(|numeric|, 1)) ... normalized so
-- ok means max_error <= 1; report lists the worst element.
function M.check_grad(f, x, opts)
  check_fn(f, "check_grad")
  if type(x) ~= "number" and not is_tensor(x) then
    raise("", "check_grad: x must be a tensor or a number, got %s", type(x))
  end
  if opts ~= nil and type(opts) ~= "table" then
    raise("", "check_grad: options must be a table, got %s", type(opts))
  end
  opts = opts or {}
  util.check_keys(opts, {"eps", "rtol", "atol"}, "check_grad")
  local eps, rtol, atol = opts.eps or 1e-6, opts.rtol or 1e-6, opts.atol or 1e-8
  for _, k in ipairs{"eps", "rtol", "atol"} do
    local v = ({eps = eps, rtol = rtol, atol = atol})[k]
    if type(v) ~= "number" or not (v >= 0) or v == math.huge or (k == "eps" and v == 0) then
      raise("", "check_grad: option '%s' must be a finite number %s, got %s", k, k == "eps" and "> 0" or ">= 0",
        util.show(v))
    end
  end
  local scalar = type(x) == "number"
  local ok, x0 = pcall(function() return scalar and core.tensor(x) or x:clone() end)
  if not ok then raise("", "check_grad: x: %s", tostring(x0):gsub("^[^\n]-:%d+: ", "")) end
  -- f sees the same kind of argument (number or tensor) here as in the differences below
  local g = M.grad(f)(scalar and x or x0)
  if scalar then g = core.tensor(g) end
  local function val(t)
    local y = f(scalar and t:item() or t)
    if type(y) == "number" then return y end
    return y:item()
  end
  local flat = x0:reshape(x0:numel())
  local gflat = g:reshape(g:numel())
  local worst, where, an, nu = 0, 0, 0, 0
  for i = 1, x0:numel() do
    local xi = flat[i]
    local h = eps * math.max(1, math.abs(xi))
    flat[i] = xi + h
    local fp = val(x0)
    flat[i] = xi - h
    local fm = val(x0)
    flat[i] = xi
    local num = (fp - fm) / (2 * h)
    local a = gflat[i]
    local err = math.abs(a - num) / (atol + rtol * math.max(math.abs(num), 1))
    if err ~= err then err = math.huge end
    if err > worst or i == 1 then worst, where, an, nu = err, i, a, num end
  end
  local report = ("element %d: analytic %.12g, central difference %.12g (normalized error %.3g)")
    :format(where, an, nu, worst)
  return worst <= 1, worst, report
end

return M
