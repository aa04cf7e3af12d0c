-- Networks and data through the Lua API (lua/src/lms_nn.c, lua/metastep/nn.lua): layers and
-- the MLP against plain Lua arithmetic, their gradients against central differences
-- (check_grad), the MLP objective with sgd mini-batches and a meta-gradient through an
-- unrolled optimizer (reverse mode against finite differences), parameter trees with grad
-- and optimizers, the loaders (an IDX file written here, Fashion-MNIST's test split), the
-- synthetic set and tasks, and the errors at the boundary.
local ms = require "metastep"
local h = dofile((debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "tests/lua") .. "/helpers.lua")
local err_of, assert_close, assert_num = h.err_of, h.assert_close, h.assert_num

local function assert_grad(what, f, x)
  local ok, err, report = ms.check_grad(f, x, {rtol = 1e-6})
  assert.is_true(ok, ("%s: %s (normalized error %g)"):format(what, report, err))
end

local function sigm(z) return 1 / (1 + math.exp(-z)) end
local function tanh(z) return 2 * sigm(2 * z) - 1 end

-- plain Lua: rows of x (n x i) times W (i x o) plus b
local function dense_ref(x, W, b)
  local out = {}
  for r = 1, #x do
    out[r] = {}
    for j = 1, #W[1] do
      local s = b and b[j] or 0
      for k = 1, #W do s = s + x[r][k] * W[k][j] end
      out[r][j] = s
    end
  end
  return out
end

local function flat(t) return t:reshape(t:numel()) end

local function flat_of(t)
  local out = {}
  for _, row in ipairs(t) do
    if type(row) == "table" then for _, v in ipairs(row) do out[#out + 1] = v end else out[#out + 1] = row end
  end
  return out
end

describe("nn layers", function()
  local x, W, b = ms.randn({3, 4}, {seed = 1}), ms.randn({4, 2}, {seed = 2}), ms.randn({2}, {seed = 3})

  it("dense is x W + b, with and without b", function()
    assert_close(flat(ms.nn.dense(x, W, b)), flat_of(dense_ref(x:totable(), W:totable(), b:totable())), 1e-14)
    assert_close(flat(ms.nn.dense(x, W)), flat_of(dense_ref(x:totable(), W:totable())), 1e-14)
  end)

  it("dense: gradients in x, W and b against central differences", function()
    local r = ms.randn({3, 2}, {seed = 4})
    assert_grad("x", function(v) return ms.sum(ms.tanh(ms.nn.dense(v, W, b)) * r) end, x)
    assert_grad("W", function(v) return ms.sum(ms.tanh(ms.nn.dense(x, v, b)) * r) end, W)
    assert_grad("b", function(v) return ms.sum(ms.tanh(ms.nn.dense(x, W, v)) * r) end, b)
    -- second order: the gradient of a gradient entry
    assert_grad("d/dW of d/dW", function(v)
      return ms.sum(ms.grad(function(u) return ms.sum(ms.tanh(ms.nn.dense(x, u, b)) * r) end)(v) * r:sum())
    end, W)
  end)

  it("lstm_cell follows c' = s(f) c + s(i) tanh(g), h' = s(o) tanh(c'), and its gradients", function()
    local H = 2
    local hh, c = ms.randn({3, H}, {seed = 5}), ms.randn({3, H}, {seed = 6})
    local Wx, Wh, bb = ms.randn({4, 4 * H}, {seed = 7}) * 0.5, ms.randn({H, 4 * H}, {seed = 8}) * 0.5,
                       ms.randn({4 * H}, {seed = 9}) * 0.5
    local h1, c1 = ms.nn.lstm_cell(x, hh, c, Wx, Wh, bb)
    local z1 = dense_ref(x:totable(), Wx:totable(), bb:totable())
    local z2 = dense_ref(hh:totable(), Wh:totable())
    local ct, hn, cn = c:totable(), {}, {}
    for r = 1, 3 do
      for j = 1, H do
        local function z(g) return z1[r][g * H + j] + z2[r][g * H + j] end
        local cv = sigm(z(1)) * ct[r][j] + sigm(z(0)) * tanh(z(2))
        cn[#cn + 1], hn[#hn + 1] = cv, sigm(z(3)) * tanh(cv)
      end
    end
    assert_close(flat(h1), hn, 1e-14, "h'")
    assert_close(flat(c1), cn, 1e-14, "c'")
    local r1, r2 = ms.randn({3, H}, {seed = 10}), ms.randn({3, H}, {seed = 11})
    local args = {x, hh, c, Wx, Wh, bb}
    for i, name in ipairs{"x", "h", "c", "Wx", "Wh", "b"} do
      assert_grad("lstm d/d" .. name, function(v)
        local a = {table.unpack(args)}
        a[i] = v
        local hv, cv = ms.nn.lstm_cell(table.unpack(a))
        return ms.sum(hv * r1) + ms.sum(cv * r2)
      end, args[i])
    end
  end)
end)

-- plain Lua MLP: logits of one row
local function mlp_ref(layers, w, row)
  local a, off = row, 0
  for l = 2, #layers do
    local nin, nout, out = layers[l - 1], layers[l], {}
    for j = 1, nout do
      local s = w[off + nin * nout + j]
      for k = 1, nin do s = s + a[k] * w[off + (k - 1) * nout + j] end
      out[j] = (l < #layers and s < 0) and 0 or s
    end
    a, off = out, off + (nin + 1) * nout
  end
  return a
end

local function xent_ref(layers, w, X, y, rows)
  local s = 0
  for _, i in ipairs(rows) do
    local z = mlp_ref(layers, w, X[i])
    local m = math.max(table.unpack(z))
    local e = 0
    for _, v in ipairs(z) do e = e + math.exp(v - m) end
    s = s + m + math.log(e) - z[math.tointeger(y[i]) + 1]
  end
  return s / #rows
end

describe("nn MLP", function()
  local layers = {5, 4, 3}
  local X = ms.randn({8, 5}, {seed = 21})
  local y = ms.tensor{0, 2, 1, 1, 0, 2, 2, 1}
  local w = ms.nn.mlp_init(layers, {seed = 4}) + ms.randn({39}, {seed = 5}) * 0.05
  local all = {1, 2, 3, 4, 5, 6, 7, 8}

  it("mlp_size, mlp_init (biases 0, reproducible) and mlp_forward against plain Lua", function()
    assert.are.equal(39, ms.nn.mlp_size(layers))
    assert.are.equal(39, ms.nn.mlp_size({5.0, 4, 3.0}))
    local w0 = ms.nn.mlp_init(layers, {seed = 4})
    assert.are.equal(0, ms.max_abs_diff(w0, ms.nn.mlp_init(layers, {seed = 4})))
    assert.is_true(ms.max_abs_diff(w0, ms.nn.mlp_init(layers, {seed = 5})) > 0)
    local t = w0:totable()
    for _, k in ipairs{21, 22, 23, 24, 37, 38, 39} do assert.are.equal(0, t[k]) end
    local want = {}
    local wt, Xt = w:totable(), X:totable()
    for i = 1, 8 do for _, v in ipairs(mlp_ref(layers, wt, Xt[i])) do want[#want + 1] = v end end
    assert_close(flat(ms.nn.mlp_forward(layers, w, X)), want, 1e-14)
    -- layer 2: W at entries 25..36, b at 37..39 (1-based)
    local W2, b2 = ms.nn.mlp_layer(layers, w, 2)
    assert.are.same({4, 3}, W2:shape())
    assert.are.same(w:slice(1, 25, 36):totable(), W2:reshape(12):totable())
    assert.are.same(w:slice(1, 37, 39):totable(), b2:totable())
  end)

  it("objective.mlp: value, grad, grad_batch on rows and accuracy", function()
    local obj = ms.objective.mlp{layers = layers, X = X, y = y}
    assert.are.equal(39, obj:dim())
    local wt, Xt, yt = w:totable(), X:totable(), y:totable()
    assert_num(obj:value(w):item(), xent_ref(layers, wt, Xt, yt, all), 1e-13, "value")
    assert_grad("grad", function(v) return obj:value(v) end, w)
    assert_close(obj:grad(w), ms.grad(function(v) return obj:value(v) end)(w), 1e-13, "grad")
    -- grad_batch on rows {2, 5, 5} (1-based) is the gradient of the mean loss over them
    local gb = obj:grad_batch(w, {2, 5, 5})
    local sub = ms.objective.mlp{layers = layers, X = ms.cat({X[2]:view(1, 5), X[5]:view(1, 5), X[5]:view(1, 5)}),
                                 y = ms.tensor{yt[2], yt[5], yt[5]}}
    assert_num(sub:value(w):item(), xent_ref(layers, wt, Xt, yt, {2, 5, 5}), 1e-13, "batch value")
    assert_close(gb, sub:grad(w), 1e-13, "grad_batch")
    -- hvp against central differences of grad
    local v = ms.randn({39}, {seed = 6})
    local eps = 1e-5
    assert_close(obj:hvp(w, v), (obj:grad(w + v * eps) - obj:grad(w - v * eps)) / (2 * eps), 1e-6, "hvp")
    local right = 0
    for i = 1, 8 do
      local z = mlp_ref(layers, wt, Xt[i])
      local best = 1
      for j = 2, 3 do if z[j] > z[best] then best = j end end
      if best - 1 == yt[i] then right = right + 1 end
    end
    assert.are.equal(right / 8, ms.nn.mlp_accuracy(layers, w, X, y))
  end)

  it("sgd unrolls on it, and the reverse meta-gradient through 5 GD steps matches finite differences", function()
    local obj = ms.objective.mlp{layers = layers, X = X, y = y}
    local traj = ms.meta.unroll{objective = obj, optimizer = ms.optim.sgd{lr = 0.3, batch = 4, seed = 1},
                                w0 = w, steps = 40}
    assert.is_true(traj.losses[40]:item() < 0.8 * traj.loss0:item())
    local function vg(method)
      return ms.meta.value_and_grad{objective = obj, optimizer = ms.optim.gd{lr = 0.4}, w0 = w, steps = 5,
                                    meta = "naive", method = method}
    end
    local r, f = vg("reverse"), vg("fd")
    assert_num(r.grad.lr, f.grad.lr, 1e-6, "d f(w_5) / d lr")
  end)
end)

describe("parameter trees", function()
  local tree = {W1 = ms.randn({3, 2}, {seed = 1}), b1 = ms.randn({2}, {seed = 2}),
                layers = {ms.randn({2, 2}, {seed = 3}), ms.randn({1}, {seed = 4})}}

  it("flatten orders leaves (integer keys, then sorted strings) and unflatten gives views", function()
    local flat, spec = ms.nn.flatten(tree)
    assert.are.same({6 + 2 + 4 + 1}, flat:shape())
    local want = {}
    for _, t in ipairs{tree.W1, tree.b1, tree.layers[1], tree.layers[2]} do
      for _, v in ipairs(t:reshape(t:numel()):totable()) do want[#want + 1] = v end
    end
    assert.are.same(want, flat:totable())
    local back = ms.nn.unflatten(flat, spec)
    assert.are.same(tree.W1:totable(), back.W1:totable())
    assert.are.same(tree.layers[1]:totable(), back.layers[1]:totable())
    assert.is_true(back.W1:shares_storage(flat))
    assert.is_false(flat:shares_storage(tree.W1))
    local one = ms.nn.flatten(tree.b1)
    assert.is_false(one:shares_storage(tree.b1))
    assert.are.same(tree.b1:totable(), one:totable())
  end)

  it("the gradient through unflatten is the flattened gradient of the tree", function()
    local function f(t)
      return ms.sum(ms.tanh(ms.matmul(t.W1, t.layers[1]) + t.b1)) + ms.sum(t.layers[2] * t.layers[2])
    end
    local flat, spec = ms.nn.flatten(tree)
    local g_tree = ms.grad(f)(tree)
    local g_flat = ms.grad(function(v) return f(ms.nn.unflatten(v, spec)) end)(flat)
    assert_close(g_flat, ms.nn.flatten(g_tree), 1e-14)
    assert_grad("flat", function(v) return f(ms.nn.unflatten(v, spec)) end, flat)
  end)

  it("tree_objective: optimizers and meta-gradients take a network given as a table", function()
    local obj, spec = ms.nn.tree_objective(function(t) return ms.sum((t.a - 1) ^ 2) + ms.sum(t.b ^ 2) end,
                                           {a = ms.zeros({2}), b = ms.ones({3})})
    assert.are.equal(5, obj:dim())
    local w0 = ms.nn.flatten{a = ms.zeros({2}), b = ms.ones({3})}
    local traj = ms.meta.unroll{objective = obj, optimizer = ms.optim.gd{lr = 0.25}, w0 = w0, steps = 3}
    -- closed form: each coordinate's error shrinks by (1 - 2 lr) = 0.5 per step
    local wt = ms.nn.unflatten(traj.w_T, spec)
    assert_close(wt.a, {1 - 0.125, 1 - 0.125}, 1e-14)
    assert_close(wt.b, {0.125, 0.125, 0.125}, 1e-14)
  end)
end)

describe("data", function()
  local dir = os.tmpname()

  teardown(function() os.remove(dir) end)

  it("idx reads a plain IDX file written here, byte for byte", function()
    local f = assert(io.open(dir, "wb"))
    local bytes = {}
    for i = 1, 2 * 3 * 4 do bytes[i] = (i * 37) % 256 end
    f:write(string.char(0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4), string.char(table.unpack(bytes)))
    f:close()
    local t = ms.data.idx(dir)
    assert.are.same({2, 3, 4}, t:shape())
    assert.are.same(bytes, t:reshape(24):totable())
    f = assert(io.open(dir, "wb"))
    f:write(string.char(0, 0, 8, 1, 0, 0, 0, 9, 1, 2))
    f:close()
    local none, msg = ms.data.idx(dir)
    assert.is_nil(none)
    assert.are.equal(("idx: '%s': truncated data (2 of 9 bytes for shape [9])"):format(dir), msg)
  end)

  it("missing files give nil and a message (naming the package for Fashion-MNIST)", function()
    local none, msg = ms.data.idx("/nonexistent/x.gz")
    assert.is_nil(none)
    assert.are.equal("idx: cannot open '/nonexistent/x.gz': No such file or directory", msg)
    none, msg = ms.data.fashion_mnist{dir = "/nonexistent", split = "test"}
    assert.is_nil(none)
    assert.is_truthy(msg:find("install the Debian package dataset-fashion-mnist", 1, true))
  end)

  it("fashion_mnist reads the installed test split", function()
    local X, y = ms.data.fashion_mnist{split = "test"}
    assert.are.same({10000, 784}, X:shape())
    assert.are.same({10000}, y:shape())
    assert.are.equal(0, X:min():item())
    assert.are.equal(1, X:max():item())
    assert.are.equal(4.5, y:mean():item()) -- 1000 images of each class 0..9
  end)

  it("synthetic is reproducible from its seed; task splits it into disjoint subsets", function()
    local X, y = ms.data.synthetic{seed = 3, n = 50, side = 4, classes = 3}
    local X2, y2 = ms.data.synthetic{seed = 3, n = 50, side = 4, classes = 3}
    assert.are.same({50, 16}, X:shape())
    assert.are.equal(0, ms.max_abs_diff(X, X2))
    assert.are.equal(0, ms.max_abs_diff(y, y2))
    -- rows tagged with their index in the first column
    local tagged = ms.cat({ms.arange(0, 50, 1):view(50, 1), X}, 2)
    local task = ms.data.task{images = tagged, labels = y, n_train = 20, n_valid = 30, seed = 1}
    assert.are.same({20, 17}, task.X:shape())
    assert.are.same({30}, task.y_valid:shape())
    local seen, yt = {}, y:totable()
    for _, part in ipairs{{task.X, task.y}, {task.X_valid, task.y_valid}} do
      local rows, labels = part[1]:totable(), part[2]:totable()
      for k, row in ipairs(rows) do
        local i = math.tointeger(row[1]) + 1
        assert.is_nil(seen[i])
        seen[i] = true
        assert.are.equal(yt[i], labels[k])
      end
    end
  end)
end)

describe("nn and data errors", function()
  local X = ms.zeros({4, 3})
  local cases = {
    {"nn.dense: argument 2 (W) must be a tensor, got nil", function() ms.nn.dense(X) end},
    {"dense: x has shape [4,3], expected [n,2] or [2] (W is [2,5])", function() ms.nn.dense(X, ms.zeros({2, 5})) end},
    {"lstm_cell: Wx has shape [3,4], expected [3,8]",
     function() ms.nn.lstm_cell(X, ms.zeros({4, 2}), ms.zeros({4, 2}), ms.zeros({3, 4}), ms.zeros({2, 8})) end},
    {"nn.mlp_init: layers must list 2..16 sizes (input, hidden..., output), got 1",
     function() ms.nn.mlp_init({3}) end},
    {"nn.mlp_init: layers[2] must be a positive integer, got 0", function() ms.nn.mlp_init({3, 0}) end},
    {"nn.mlp_size: layers[1] must be a positive integer, got 2.5", function() ms.nn.mlp_size({2.5, 1}) end},
    {"nn.mlp_init: unknown option 'sed' (did you mean 'seed'?) (expected seed, scale)",
     function() ms.nn.mlp_init({3, 2}, {sed = 1}) end},
    {"mlp_init: scale must be finite and > 0, got 0", function() ms.nn.mlp_init({3, 2}, {scale = 0}) end},
    {"mlp_forward: w has shape [4,3], expected [8] (the flat parameters of the layers)",
     function() ms.nn.mlp_forward({3, 2}, X, X) end},
    {"nn.mlp_layer: l must be an integer in 1..1, got 2", function() ms.nn.mlp_layer({3, 2}, ms.zeros({8}), 2) end},
    {"objective.mlp: option 'y' must be a tensor, got nil", function() ms.objective.mlp{layers = {3, 2}, X = X} end},
    {"objective_mlp: label 2 of row 1 is not a class index in 0..1",
     function() ms.objective.mlp{layers = {3, 2}, X = X, y = ms.full({4}, 2)} end},
    {"data.synthetic: option 'n' is required", function() ms.data.synthetic{} end},
    {"synthetic_images: side must be in 2..64, got 100", function() ms.data.synthetic{n = 1, side = 100} end},
    {"data.fashion_mnist: option 'split' must be \"train\" or \"test\", got valid",
     function() ms.data.fashion_mnist{split = "valid"} end},
    {"data.task: option 'label_noise' must be a number in [0, 1], got 2",
     function() ms.data.task{images = X, labels = ms.zeros({4}), n_train = 1, label_noise = 2} end},
    {"image_task: n_train + n_valid = 5 exceeds the 4 images available",
     function() ms.data.task{images = X, labels = ms.zeros({4}), n_train = 3, n_valid = 2} end},
    {"data.idx: expected a path (string), got nil", function() ms.data.idx() end},
    {"nn.unflatten: flat has shape [3], expected [2]",
     function() ms.nn.unflatten(ms.zeros({3}), select(2, ms.nn.flatten{ms.zeros({2})})) end},
    {"nn.flatten: expected a tensor or a table of tensors at [\"a\"], got number",
     function() ms.nn.flatten{a = 1} end},
  }
  for _, c in ipairs(cases) do
    it(c[1], function() assert.are.equal(c[1], err_of(c[2])) end)
  end

  it("errors are blamed on the caller's line", function()
    local ok, msg = pcall(function() ms.nn.mlp_forward({3, 2}, X, X) end)
    assert.is_false(ok)
    assert.is_truthy(msg:find("nn_spec.lua:%d+: mlp_forward"))
  end)
end)

-- The C bindings behind ms.nn and ms.data, called with odd arguments inside pcall: each
-- call must return, with a string message when it fails (a crash or sanitizer report fails
-- the ctest entry). A smaller cousin of fuzz_spec.lua, for these core functions.
describe("nn and data bindings with odd arguments", function()
  local core = ms.core
  local odd = {
    function() return nil end, function() return true end, function() return 0 end,
    function() return -1 end, function() return 2.5 end, function() return 0 / 0 end,
    function() return math.maxinteger end, function() return 1 << 40 end, function() return "x" end,
    function() return {} end, function() return {3, 2} end, function() return {2, 0} end,
    function() return {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1} end,
    function() return {1 << 40, 1 << 40} end, function() return {"a", 2} end,
    function() return ms.tensor(3) end, function() return ms.zeros(0) end, function() return ms.zeros(0, 3) end,
    function() return ms.tensor{1, 0} end, function() return ms.tensor{{1, 2, 3}, {4, 5, 6}} end,
    function() return ms.zeros(3, 8) end, function() return ms.zeros(8) end,
    function() return ms.tensor{{1, 2, 3}, {4, 5, 6}}:t() end, function() return ms.tensor{0 / 0, 1} end,
    h.released,
  }
  local names = {"nn_dense", "nn_lstm_cell", "mlp_size", "mlp_init", "mlp_layer", "mlp_forward", "mlp_accuracy",
                 "objective_mlp", "data_idx", "data_fashion_mnist", "data_synthetic", "data_task"}
  for _, name in ipairs(names) do
    it(name, function()
      ms.set_memory_limit(64 << 20)
      local rng = 12345
      local function pick()
        rng = (rng * 1103515245 + 12345) % 2147483648
        return odd[rng % #odd + 1]()
      end
      local bad = {}
      for n = 0, 6 do
        for _ = 1, (n == 0 and 1 or 120) do
          local args = {}
          for i = 1, n do args[i] = pick() end
          local ok, err = pcall(core[name], table.unpack(args, 1, n))
          if not ok and type(err) ~= "string" then bad[#bad + 1] = tostring(err) end
        end
      end
      ms.set_memory_limit(0)
      assert.are.same({}, bad)
    end)
  end
end)
