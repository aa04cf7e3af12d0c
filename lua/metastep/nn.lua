--- Networks and data: layers on the tape, an MLP classifier over one flat parameter vector,
-- parameter trees, Fashion-MNIST, a synthetic image set and tasks.
-- Every layer is built from the engine's differentiable operations (engine/src/nn.c), so
-- grad, jvp, hvp and the meta-gradient methods see through it; a mini-batch step is a few
-- BLAS calls. ms.nn.data is ms.data.
local core = require "metastep.core"
local util = require "metastep.util"

local M = {}
local data = {}
M.data = data

local function is_tensor(v) return getmetatable(v) == core.Tensor_mt end

local function fail(fname, fmt, ...) util.raise(fname .. ": ", fmt, ...) end

-- opts must be a table whose keys are all in known.
local function check_opts(fname, opts, known)
  if type(opts) ~= "table" then fail(fname, "expected an options table, got %s", type(opts)) end
  local set = {}
  for _, k in ipairs(known) do set[k] = true end
  for k in pairs(opts) do
    if not set[k] then
      fail(fname, "unknown option '%s'%s (expected %s)", tostring(k), util.suggest(k, known),
        table.concat(known, ", "))
    end
  end
end

local function check_int(fname, opts, key, default, lo)
  local v = opts[key]
  if v == nil then v = default end
  if v == nil then fail(fname, "option '%s' is required", key) end
  if math.type(v) ~= "integer" and not (type(v) == "number" and v == math.floor(v) and v == v) then
    fail(fname, "option '%s' must be an integer, got %s", key, type(v) == "number" and util.show(v) or type(v))
  end
  v = math.tointeger(v)
  if v == nil or (lo and v < lo) then
    fail(fname, "option '%s' must be an integer >= %d, got %s", key, lo or 0, util.show(opts[key]))
  end
  return v
end

local function check_tensor(fname, opts, key)
  local v = opts[key]
  if not is_tensor(v) then fail(fname, "option '%s' must be a tensor, got %s", key, type(v)) end
  return v
end

-- Positional tensor arguments: names[i] is the name of argument i; nil is allowed where
-- optional[i].
local function check_args(fname, names, optional, ...)
  for i, name in ipairs(names) do
    local v = select(i, ...)
    if not (is_tensor(v) or (v == nil and optional and optional[i])) then
      fail(fname, "argument %d (%s) must be a tensor, got %s", i, name, type(v))
    end
  end
end

-- layers: a sequence of 2..16 positive integers (floats with integer values too); returns a
-- copy holding Lua integers.
local function check_layers(fname, layers)
  if type(layers) ~= "table" then fail(fname, "layers must be a table of sizes, got %s", type(layers)) end
  if #layers < 2 or #layers > 16 then
    fail(fname, "layers must list 2..16 sizes (input, hidden..., output), got %d", #layers)
  end
  local out = {}
  for i = 1, #layers do
    local v = layers[i]
    out[i] = type(v) == "number" and math.tointeger(v) or nil
    if out[i] == nil or out[i] < 1 then
      fail(fname, "layers[%d] must be a positive integer, got %s", i, util.show(v))
    end
  end
  return out
end

-- Calls a C function whose errors should be blamed on the user's line: the location the
-- binding put in front of the message (this file's line) is replaced by the caller's.
local function call(f, ...)
  local res = table.pack(pcall(f, ...))
  if not res[1] then util.raise("", "%s", (tostring(res[2]):gsub("^metastep/[%w_]+%.lua:%d+: ", ""))) end
  return table.unpack(res, 2, res.n)
end

-- ---------------------------------------------------------------------------------------
-- Layers

--- dense(x [n,in], W [in,out] [, b [out]]) -> x W + b, [n,out].
function M.dense(x, W, b)
  check_args("nn.dense", {"x", "W", "b"}, {[3] = true}, x, W, b)
  return call(core.nn_dense, x, W, b)
end

--- lstm_cell(x [n,in], h [n,H], c [n,H], Wx [in,4H], Wh [H,4H] [, b [4H]]) -> h', c'.
-- Gates i, f, g, o are the column blocks of z = x Wx + h Wh + b, in that order:
-- c' = sigmoid(f) c + sigmoid(i) tanh(g), h' = sigmoid(o) tanh(c').
function M.lstm_cell(x, h, c, Wx, Wh, b)
  check_args("nn.lstm_cell", {"x", "h", "c", "Wx", "Wh", "b"}, {[6] = true}, x, h, c, Wx, Wh, b)
  return call(core.nn_lstm_cell, x, h, c, Wx, Wh, b)
end

-- ---------------------------------------------------------------------------------------
-- MLP over a flat parameter vector: for layers {n0, n1, ..., nL}, w holds W1 ([n0,n1],
-- row-major), b1, W2, b2, ... Hidden layers use ReLU; the last gives logits.

--- mlp_size(layers) -> the length of the flat parameter vector.
function M.mlp_size(layers)
  layers = check_layers("nn.mlp_size", layers)
  return call(core.mlp_size, layers)
end

--- mlp_init(layers [, {seed = 0, scale = 1.2}]) -> flat w: W ~ N(0,1) scale / sqrt(fan_in), b = 0.
function M.mlp_init(layers, opts)
  opts = opts or {}
  layers = check_layers("nn.mlp_init", layers)
  check_opts("nn.mlp_init", opts, {"seed", "scale"})
  local seed = check_int("nn.mlp_init", opts, "seed", 0, 0)
  local scale = opts.scale or 1.2
  if type(scale) ~= "number" then fail("nn.mlp_init", "option 'scale' must be a number, got %s", type(scale)) end
  return call(core.mlp_init, layers, seed, scale)
end

--- mlp_layer(layers, w, l) -> W_l [n_{l-1}, n_l], b_l [n_l]: views into w (l = 1 .. #layers - 1).
function M.mlp_layer(layers, w, l)
  layers = check_layers("nn.mlp_layer", layers)
  check_args("nn.mlp_layer", {"w"}, nil, w)
  if math.type(l) ~= "integer" or l < 1 or l >= #layers then
    fail("nn.mlp_layer", "l must be an integer in 1..%d, got %s", #layers - 1, util.show(l))
  end
  return call(core.mlp_layer, layers, w, l)
end

--- mlp_forward(layers, w, X [n,n0]) -> logits [n,nL] (differentiable in w and X).
function M.mlp_forward(layers, w, X)
  layers = check_layers("nn.mlp_forward", layers)
  check_args("nn.mlp_forward", {"w", "X"}, nil, w, X)
  return call(core.mlp_forward, layers, w, X)
end

--- mlp_accuracy(layers, w, X, y) -> share of rows whose largest logit is the label y (0-based class).
function M.mlp_accuracy(layers, w, X, y)
  layers = check_layers("nn.mlp_accuracy", layers)
  check_args("nn.mlp_accuracy", {"w", "X", "y"}, nil, w, X, y)
  return call(core.mlp_accuracy, layers, w, X, y)
end

--- objective_mlp{layers =, X =, y =}: the mean softmax cross-entropy of the MLP as an objective
-- of the flat w (dim = mlp_size(layers)); its samples are the rows of X (sgd mini-batches,
-- obj:grad_batch(w, idx)). Labels y are class indices 0..nL-1. Also ms.objective.mlp.
function M.objective_mlp(opts)
  check_opts("objective.mlp", opts, {"layers", "X", "y"})
  local layers = check_layers("objective.mlp", opts.layers)
  local X, y = check_tensor("objective.mlp", opts, "X"), check_tensor("objective.mlp", opts, "y")
  return call(core.objective_mlp, layers, X, y)
end

-- ---------------------------------------------------------------------------------------
-- Parameter trees: a table (possibly nested) of tensors <-> one flat vector.

-- Keys of a table in a fixed order: integers ascending, then strings sorted.
local function ordered_keys(t, fname, path)
  local ints, strs = {}, {}
  for k in pairs(t) do
    if math.type(k) == "integer" then ints[#ints + 1] = k
    elseif type(k) == "string" then strs[#strs + 1] = k
    else
      fail(fname, "keys must be strings or integers, got a %s key at %s", type(k), path == "" and "the root" or path)
    end
  end
  table.sort(ints)
  table.sort(strs)
  table.move(strs, 1, #strs, #ints + 1, ints)
  return ints
end

local function collect(tree, fname, path, leaves)
  if is_tensor(tree) then
    leaves[#leaves + 1] = tree
    return {shape = tree:shape(), numel = tree:numel()}
  end
  if type(tree) ~= "table" then
    fail(fname, "expected a tensor or a table of tensors at %s, got %s", path == "" and "the root" or path, type(tree))
  end
  local node = {keys = ordered_keys(tree, fname, path), children = {}}
  if #node.keys == 0 then fail(fname, "empty table at %s", path == "" and "the root" or path) end
  for i, k in ipairs(node.keys) do
    local sub = path .. "[" .. (type(k) == "string" and ("%q"):format(k) or k) .. "]"
    node.children[i] = collect(tree[k], fname, sub, leaves)
  end
  return node
end

--- flatten(tree) -> flat [P], spec: the tensors of a (nested) table, in a fixed order
-- (integer keys ascending, then string keys sorted), reshaped and concatenated; spec
-- rebuilds the tree with unflatten. Differentiable (flat is a concatenation, a fresh tensor).
function M.flatten(tree)
  local leaves = {}
  local root = collect(tree, "nn.flatten", "", leaves)
  local parts = {}
  for i, t in ipairs(leaves) do parts[i] = t:reshape(t:numel()) end
  local total = 0
  for _, t in ipairs(leaves) do total = total + t:numel() end
  local flat = core.cat(parts, 1) -- fresh storage even for one leaf: flat never aliases the tree
  return flat, {root = root, numel = total}
end

local function rebuild(node, flat, pos)
  if node.shape then
    local n = node.numel
    local piece = n == 0 and core.zeros(node.shape) or flat:slice(1, pos, pos + n - 1)
    if #node.shape ~= 1 then piece = piece:reshape(node.shape) end
    return piece, pos + n
  end
  local out = {}
  for i, k in ipairs(node.keys) do out[k], pos = rebuild(node.children[i], flat, pos) end
  return out, pos
end

--- unflatten(flat, spec) -> tree: views into flat shaped like the tree flatten was given.
-- Differentiable (slices and reshapes of flat).
function M.unflatten(flat, spec)
  if not is_tensor(flat) then fail("nn.unflatten", "expected a tensor, got %s", type(flat)) end
  if type(spec) ~= "table" or spec.root == nil then
    fail("nn.unflatten", "expected the spec returned by nn.flatten, got %s", type(spec))
  end
  if flat:ndim() ~= 1 or flat:numel() ~= spec.numel then
    fail("nn.unflatten", "flat has shape [%s], expected [%d]", table.concat(flat:shape(), ","), spec.numel)
  end
  return (rebuild(spec.root, flat, 1))
end

--- tree_objective(f, tree [, {name =}]) -> objective of the flat vector, spec: f receives the
-- tree (views into w) and returns a scalar tensor; the objective's grad and hvp come from
-- autodiff, so optimizers and meta-gradient methods take a network given as a table.
function M.tree_objective(f, tree, opts)
  if type(f) ~= "function" then fail("nn.tree_objective", "expected a function, got %s", type(f)) end
  opts = opts or {}
  check_opts("nn.tree_objective", opts, {"name"})
  local _, spec = M.flatten(tree)
  local objective = require "metastep.objective"
  local obj = objective.from_function(function(w) return f(M.unflatten(w, spec)) end,
    {dim = spec.numel, name = opts.name or "tree"})
  return obj, spec
end

-- ---------------------------------------------------------------------------------------
-- Data

--- data.idx(path) -> tensor (the IDX file's shape, bytes 0..255 as doubles), or nil, message
-- when the file cannot be read or is malformed. Gzip-compressed and plain files both work.
function data.idx(path)
  if type(path) ~= "string" then fail("data.idx", "expected a path (string), got %s", type(path)) end
  return call(core.data_idx, path)
end

--- data.fashion_mnist{split = "train"|"test", dir = "/usr/share/datasets/fashion-mnist"} ->
-- images [n,784] in [0,1], labels [n] (0..9), or nil, message (naming the Debian package
-- dataset-fashion-mnist when the files are absent).
function data.fashion_mnist(opts)
  opts = opts or {}
  check_opts("data.fashion_mnist", opts, {"split", "dir"})
  local split = opts.split or "train"
  if split ~= "train" and split ~= "test" then
    fail("data.fashion_mnist", "option 'split' must be \"train\" or \"test\", got %s", util.show(split))
  end
  if opts.dir ~= nil and type(opts.dir) ~= "string" then
    fail("data.fashion_mnist", "option 'dir' must be a string, got %s", type(opts.dir))
  end
  return call(core.data_fashion_mnist, opts.dir, split)
end

--- data.synthetic{seed = 0, n =, side = 8, classes = 10} -> images [n, side^2] in [0,1],
-- labels [n]: class prototypes (smooth blobs) mixed with another class and noise; the same
-- seed gives the same set. Held-out images: split one set with data.task.
function data.synthetic(opts)
  check_opts("data.synthetic", opts, {"seed", "n", "side", "classes"})
  local seed = check_int("data.synthetic", opts, "seed", 0, 0)
  local n = check_int("data.synthetic", opts, "n", nil, 1)
  local side = check_int("data.synthetic", opts, "side", 8, 2)
  local classes = check_int("data.synthetic", opts, "classes", 10, 2)
  return call(core.data_synthetic, seed, n, side, classes)
end

--- data.task{images =, labels =, n_train =, n_valid = 0, label_noise = 0, seed = 0} ->
-- {X =, y =, X_valid =, y_valid =}: disjoint random subsets; with probability label_noise
-- each label (of both subsets) is replaced by a class drawn uniformly from 0..max(labels).
function data.task(opts)
  check_opts("data.task", opts, {"images", "labels", "n_train", "n_valid", "label_noise", "seed"})
  local X, y = check_tensor("data.task", opts, "images"), check_tensor("data.task", opts, "labels")
  local ntr = check_int("data.task", opts, "n_train", nil, 1)
  local nva = check_int("data.task", opts, "n_valid", 0, 0)
  local seed = check_int("data.task", opts, "seed", 0, 0)
  local p = opts.label_noise or 0
  if type(p) ~= "number" or not (p >= 0 and p <= 1) then
    fail("data.task", "option 'label_noise' must be a number in [0, 1], got %s", util.show(p))
  end
  local Xt, yt, Xv, yv = call(core.data_task, X, y, ntr, nva, p, seed)
  return {X = Xt, y = yt, X_valid = Xv, y_valid = yv}
end

return M
