--- metastep: learning to learn, on a C engine.
-- The front library: the C core's functions plus Lua-side conveniences.
-- Tensor views (share storage with their source): view, reshape of a contiguous
-- tensor, transpose/t, permute, slice, select, expand and indexing t[i] of a
-- multi-dimensional tensor. Everything else returns a fresh tensor.
local core = require "metastep.core"
local raise = require("metastep.util").raise

local M = {}

--- The public names of the C core (tensors, math, reductions, random numbers, memory). Every
-- other binding stays internal, under ms.core.
local PUBLIC = {
  "tensor", "zeros", "ones", "full", "eye", "diag", "arange", "linspace", "rand", "randn", "cat", "where",
  "clamp", "abs", "neg", "exp", "expm1", "log", "log1p", "sqrt", "square", "reciprocal", "tanh", "sigmoid",
  "relu", "softplus", "sin", "cos", "sign", "floor", "ceil", "round", "isfinite", "add", "sub", "mul", "div",
  "pow", "maximum", "minimum", "atan2", "eq", "ne", "lt", "le", "gt", "ge", "sum", "mean", "max", "min",
  "prod", "norm", "argmax", "argmin", "logsumexp", "all_finite", "max_abs_diff", "dot", "matvec", "matmul",
  "outer", "eigh", "solve", "cholesky", "qr", "inv", "det", "sum_to", "log_softmax", "softmax_xent",
  "stop_gradient", "ad_push", "ad_depth", "seed", "memory", "set_memory_limit", "version",
  "Tensor", "Objective", "Objective_mt",
  "save", "load",
  "set_check_numerics",
}
for _, k in ipairs(PUBLIC) do M[k] = core[k] end
--- The C core itself, for internals and tests.
M.core = core

--- Automatic differentiation (also at the top level): grad, value_and_grad, jvp, vjp,
-- hvp, check_grad, custom, stop_gradient.
M.autodiff = require "metastep.autodiff"
for _, k in ipairs{"grad", "value_and_grad", "jvp", "vjp", "hvp", "check_grad", "custom",
                    "stop_gradient"} do
  M[k] = M.autodiff[k]
end

--- Learning to learn: objectives and task samplers, optimizers with meta-parameters,
-- unrolls, meta-objectives, meta-gradients and meta-training.
M.objective = require "metastep.objective"
M.tasks = M.objective.tasks
M.optim = require "metastep.optim"
M.meta = require "metastep.meta"
M.plot = require "metastep.plot"
--- Networks (layers, MLP over a flat vector, parameter trees) and data (Fashion-MNIST, synthetic
-- images, tasks).
M.nn = require "metastep.nn"
-- the data functions are defined in nn.lua (they share its argument checks); their one public
-- name is ms.data, so the table is moved out of ms.nn
M.data, M.nn.data = M.nn.data, nil

--- Linear algebra, also available at the top level.
M.linalg = {
  dot = core.dot, matvec = core.matvec, matmul = core.matmul, outer = core.outer,
  eigh = core.eigh, solve = core.solve, cholesky = core.cholesky, qr = core.qr,
  inv = core.inv, det = core.det,
}

--- BLAS threads of matrix products: set_threads(n) runs every product on n threads, 0 (the
-- default) chooses by size: one thread below 512 x 512 multiply-adds, all cores above (an
-- OPENBLAS_NUM_THREADS or OMP_NUM_THREADS set in the environment is then obeyed). threads()
-- returns the setting, threads(work) the count a product of that many multiply-adds gets.
M.set_threads = core.set_threads
M.threads = core.threads

--- True if t is a metastep tensor.
function M.is_tensor(t)
  return getmetatable(t) == core.Tensor_mt
end

--- True if a and b are tensors of the same shape and, element-wise, a == b (equal infinities)
-- or |a - b| <= atol + rtol * |b| with a finite difference. A NaN is never close.
function M.allclose(a, b, rtol, atol)
  if not M.is_tensor(a) or not M.is_tensor(b) then
    raise("", "allclose: expected two tensors, got %s and %s", type(a), type(b))
  end
  rtol, atol = rtol or 1e-9, atol or 1e-12
  if type(rtol) ~= "number" or type(atol) ~= "number" then
    raise("", "allclose: rtol and atol must be numbers, got %s and %s", type(rtol), type(atol))
  end
  -- indexing a released tensor raises too: both inside pcall
  local oka, sa = pcall(function() return a:shape() end)
  local okb, sb = pcall(function() return b:shape() end)
  if not (oka and okb) then raise("", "allclose: argument %d: tensor has been released", oka and 2 or 1) end
  if #sa ~= #sb then return false end
  for i = 1, #sa do if sa[i] ~= sb[i] then return false end end
  if a:numel() == 0 then return true end
  local d = core.abs(a - b)
  local close = core.mul(core.le(d, core.abs(b) * rtol + atol), core.isfinite(d))
  return core.min(core.maximum(core.eq(a, b), close)):item() == 1
end

local function sorted_keys(t, pred)
  local keys = {}
  for k, v in pairs(t) do if pred(k, v) then keys[#keys + 1] = k end end
  table.sort(keys)
  return keys
end

--- Text of help(): the modules and their functions.
function M.help_text()
  local lines = {
    "metastep " .. M.version .. " — learning to learn on a C engine (Lua 5.4)",
    "",
    "local ms = require \"metastep\"",
    "  constructors: tensor, zeros, ones, full, eye, diag, arange, linspace, rand, randn",
    "  methods:      t:shape() t:numel() t:item() t:totable() t[i] t[{i, j}] t:t() t:view(...)",
    "  eigh, cholesky: the matrix must be symmetric within 1e-10 * max|a| (else an error naming",
    "                the largest |a - a^T|); an expand view is read-only (clone() it to write)",
  }
  local fns = sorted_keys(M, function(_, v) return type(v) == "function" end)
  -- submodules only: not the method tables and metatables of the userdata types
  local mods = sorted_keys(M, function(k, v)
    return type(v) == "table" and k ~= "Tensor" and k ~= "Objective" and k ~= "core" and not k:find("_mt$")
  end)
  lines[#lines + 1] = "  functions:    " .. table.concat(fns, " ")
  for _, m in ipairs(mods) do
    local sub = sorted_keys(M[m], function(_, v) return type(v) == "function" end)
    lines[#lines + 1] = ("  ms.%s: %s"):format(m, table.concat(sub, " "))
  end
  lines[#lines + 1] = "  tensor methods: " .. table.concat(sorted_keys(M.Tensor, function() return true end), " ")
  return table.concat(lines, "\n")
end

-- The fields of table t, by kind, as lines of at most 78 characters.
local function listing(t, prefix)
  local keys = sorted_keys(t, function(k) return type(k) == "string" and k:sub(1, 1) ~= "_" end)
  local funcs, subs, values = {}, {}, {}
  for _, k in ipairs(keys) do
    local v = t[k]
    if type(v) == "function" then funcs[#funcs + 1] = k
    elseif type(v) == "table" then subs[#subs + 1] = prefix .. k
    else values[#values + 1] = k .. " = " .. tostring(v) end
  end
  local lines = {}
  local function fill(title, names)
    if #names == 0 then return end
    lines[#lines + 1] = title .. ":"
    local line = " "
    for _, name in ipairs(names) do
      if #line + #name + 1 > 78 and line ~= " " then
        lines[#lines + 1] = line
        line = " "
      end
      line = line .. " " .. name
    end
    lines[#lines + 1] = line
  end
  fill("functions", funcs)
  fill("submodules", subs)
  fill("values", values)
  if #keys == 0 then lines[#lines + 1] = "(no public fields)" end
  return table.concat(lines, "\n")
end

--- help(): the modules and how to start; help("name") or help(ms.name): the fields of a
-- submodule (any table). The REPL's global help is this function.
function M.help(what)
  if what == nil then
    print(M.help_text())
    print("\nhelp(\"name\") or help(ms.name) lists a submodule; help(f) documents a function")
    print("(help(ms.meta.train), help(ms.zeros), help(t.reshape)). At the prompt `ms` is loaded,")
    print("an expression prints its value and Tab completes names.")
  elseif type(what) == "function" or (type(what) == "string" and type(rawget(M, what)) ~= "table") then
    -- a function, or a name such as "meta.train": its entry in metastep/doc.lua
    local text, why = require("metastep.help").text(what)
    if text then
      print(text)
    elseif type(what) == "string" then
      print(("help: metastep has no submodule or function '%s'"):format(what))
    else
      print(("help: %s"):format(why or ("function: " .. tostring(what))))
    end
  elseif type(what) == "string" then
    print(listing(rawget(M, what), "ms." .. what .. "."))
  elseif type(what) == "table" then
    print(listing(what, ""))
  else
    print(type(what) .. ": " .. tostring(what))
  end
end

return M
