-- Autodiff through the Lua API: first-order gradient checks of every differentiable
-- primitive (including broadcasting and number operands), second order, forward/reverse
-- consistency, Hessian-vector products, a meta-gradient through 100 unrolled gradient
-- steps, custom primitives with Lua rules, and the errors at the boundary.
-- Golden values come from closed forms, central differences or plain Lua arithmetic,
-- never from the transform under test.
local ms = require "metastep"
local h = dofile((debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "tests/lua") .. "/helpers.lua")
local assert_close, assert_num_close, err_of = h.assert_close, h.assert_num, h.err_of

local RTOL = 1e-6

-- ---- helpers ----

-- Fixed pseudo-random weights of a shape: a weighted sum gives every output element
-- its own cotangent, so a VJP that mixes up elements cannot pass.
local function weights(shape, seed)
  return ms.randn(shape, {seed = seed or 7})
end

local function wsum(t, seed)
  return (t * weights(t:shape(), seed)):sum()
end

local function rn(shape, seed)
  return ms.randn(shape, {seed = seed})
end

-- Values in [lo, hi] (defaults [0.5, 2]): for log, sqrt, pow bases, prod.
local function pos(shape, seed, lo, hi)
  return ms.rand(shape, {seed = seed, lo = lo or 0.5, hi = hi or 2})
end

-- Normal values pushed at least 0.25 away from 0: for kinks (abs, relu) and divisors.
local function away(shape, seed)
  local x = rn(shape, seed)
  return x + ms.sign(x) * 0.25
end

local function assert_grad(what, f, x, opts)
  local ok, err, report = ms.check_grad(f, x, opts or {rtol = RTOL})
  assert.is_true(ok, ("%s: %s (normalized error %g)"):format(what, report, err))
end

-- <a, b> summed over the tensor leaves of two structures (tensors or tables of them).
local function inner(a, b)
  if ms.is_tensor(a) then return (a * b):sum():item() end
  local s = 0
  for k, v in pairs(a) do s = s + inner(v, b[k]) end
  return s
end

-- ---- first order: every primitive against central differences ----

describe("first-order gradients", function()
  after_each(function()
    assert.are.equal(0, ms.ad_depth())
  end)

  describe("element-wise binary operations", function()
    -- name, domain of a, domain of b
    local ops = {
      {"add", rn, rn}, {"sub", rn, rn}, {"mul", rn, rn}, {"div", rn, away},
      {"pow", pos, function(s, seed) return ms.rand(s, {seed = seed, lo = -1.5, hi = 1.5}) end},
      {"maximum", rn, rn}, {"minimum", rn, rn}, {"atan2", rn, away},
    }
    -- shapes of a and b: equal, [3,1] against [4] both ways, and a 0-d tensor
    local shapes = {{{3, 4}, {3, 4}}, {{3, 1}, {4}}, {{4}, {3, 1}}, {{}, {2, 3}}, {{2, 3}, {}}}
    for _, op in ipairs(ops) do
      local name, da, db = op[1], op[2], op[3]
      local fn = ms[name]
      for k, sh in ipairs(shapes) do
        local label = ("%s [%s] op [%s]"):format(name, table.concat(sh[1], ","), table.concat(sh[2], ","))
        it(label, function()
          local a, b = da(sh[1], 10 + k), db(sh[2], 20 + k)
          assert_grad(label .. " wrt a", function(x) return wsum(fn(x, b)) end, a)
          assert_grad(label .. " wrt b", function(x) return wsum(fn(a, x)) end, b)
        end)
      end
      it(name .. " with a Lua number operand on either side", function()
        local a = da({3, 4}, 31)
        local bnum = db({}, 32):item()
        local anum = da({}, 33):item()
        local b = db({3, 4}, 34)
        -- the tensor operand is differentiated while the number stays a constant
        assert_grad(name .. "(tensor, number)", function(x) return wsum(fn(x, bnum)) end, a)
        assert_grad(name .. "(number, tensor)", function(x) return wsum(fn(anum, x)) end, b)
        -- and the number itself is differentiated (it becomes a tracked 0-d tensor)
        assert_grad(name .. " wrt the number (left)", function(s) return wsum(fn(s, b)) end, anum)
        assert_grad(name .. " wrt the number (right)", function(s) return wsum(fn(a, s)) end, bnum)
      end)
    end

    it("through the arithmetic operators, including number op tensor", function()
      local a, b = pos({3, 1}, 41), away({4}, 42)
      local f = function(x) return wsum(2 * x + x * b - b / x + x ^ 2 - 3 / x + (-x) ^ 2 - 1.5 - x) end
      assert_grad("operators wrt [3,1]", f, a)
      local g = function(y) return wsum(a * y - a / y + 2 ^ y + y ^ 3 - y * 4 + 1 / y) end
      assert_grad("operators wrt [4]", g, b)
    end)
  end)

  describe("element-wise unary operations", function()
    local ops = {
      {"exp", rn}, {"log", pos}, {"log1p", function(s, seed) return pos(s, seed, -0.5, 2) end},
      {"expm1", rn}, {"sqrt", pos}, {"square", rn}, {"reciprocal", away}, {"tanh", rn},
      {"sigmoid", rn}, {"relu", away}, {"softplus", rn}, {"sin", rn}, {"cos", rn},
      {"abs", away}, {"neg", rn},
    }
    for i, op in ipairs(ops) do
      local name, dom = op[1], op[2]
      it(name, function()
        local x = dom({3, 4}, 50 + i)
        assert_grad(name .. " (function)", function(t) return wsum(ms[name](t)) end, x)
        assert_grad(name .. " (method)", function(t) return wsum(t[name](t)) end, x)
        -- a Lua number argument: grad returns a number
        local s = dom({}, 70 + i):item()
        assert_grad(name .. " of a number", function(t) return ms[name](t) end, s)
        assert.is_number(ms.grad(function(t) return ms[name](t) end)(s))
      end)
    end
  end)

  describe("reductions", function()
    local ops = {
      {"sum", rn}, {"mean", rn}, {"max", rn}, {"min", rn}, {"prod", pos}, {"norm", rn},
      {"logsumexp", rn},
    }
    for i, op in ipairs(ops) do
      local name, dom = op[1], op[2]
      it(name .. " over everything, along each dimension, and with keepdim", function()
        local x = dom({3, 4}, 80 + i)
        assert_grad(name .. "()", function(t) return t[name](t) end, x)
        assert_grad(name .. "(1)", function(t) return wsum(t[name](t, 1)) end, x)
        assert_grad(name .. "(2)", function(t) return wsum(t[name](t, 2)) end, x)
        assert_grad(name .. "(-1, true)", function(t) return wsum(t[name](t, -1, true)) end, x)
        assert_grad(name .. " of a 3-d tensor along 2", function(t) return wsum(ms[name](t, 2)) end,
          dom({2, 3, 2}, 90 + i))
      end)
    end
  end)

  describe("selection and clamping", function()
    it("where with broadcasting and number branches", function()
      local cond = ms.gt(rn({3, 4}, 101), 0)
      local a, b = rn({3, 4}, 102), rn({4}, 103)
      assert_grad("where wrt a", function(x) return wsum(ms.where(cond, x, b)) end, a)
      assert_grad("where wrt b [4]", function(x) return wsum(ms.where(cond, a, x)) end, b)
      assert_grad("where(cond, x, 0.5)", function(x) return wsum(ms.where(cond, x, 0.5)) end, a)
      assert_grad("where(cond, 2, x)", function(x) return wsum(ms.where(cond, 2, x)) end, a)
      local c1 = ms.gt(rn({3, 1}, 104), 0)
      assert_grad("where with a [3,1] condition", function(x) return wsum(ms.where(c1, x, a)) end, b)
    end)

    it("clamp away from the bounds", function()
      local x = ms.tensor{{-2.1, -0.7, 0.3, 1.6}, {0.05, -1.4, 0.9, 2.5}, {-0.2, 0.6, -3, 1.2}}
      assert_grad("clamp(-1, 1)", function(t) return wsum(ms.clamp(t, -1, 1)) end, x)
      assert_grad("clamp(nil, 1)", function(t) return wsum(ms.clamp(t, nil, 1)) end, x)
      assert_grad("t:clamp(-1)", function(t) return wsum(t:clamp(-1)) end, x)
      -- clipped elements get zero gradient, the others one
      local g = ms.grad(function(t) return ms.clamp(t, -1, 1):sum() end)(x)
      assert.are.same({{0, 1, 1, 0}, {1, 0, 1, 0}, {1, 1, 0, 0}}, g:totable())
    end)
  end)

  describe("products", function()
    it("dot, matvec, matmul, outer with respect to each operand", function()
      local u, v = rn({5}, 111), rn({5}, 112)
      assert_grad("dot wrt 1", function(x) return ms.dot(x, v) end, u)
      assert_grad("dot wrt 2", function(x) return ms.dot(u, x) end, v)
      local A, x4 = rn({3, 4}, 113), rn({4}, 114)
      assert_grad("matvec wrt A", function(t) return wsum(ms.matvec(t, x4)) end, A)
      assert_grad("matvec wrt x", function(t) return wsum(ms.matvec(A, t)) end, x4)
      local B = rn({4, 2}, 115)
      assert_grad("matmul wrt A", function(t) return wsum(ms.matmul(t, B)) end, A)
      assert_grad("matmul wrt B", function(t) return wsum(ms.matmul(A, t)) end, B)
      assert_grad("matmul of a transposed view", function(t) return wsum(ms.matmul(t:t(), A)) end, rn({3, 2}, 116))
      assert_grad("method A:matmul(B)", function(t) return wsum(t:matmul(B)) end, A)
      local p, q = rn({3}, 117), rn({4}, 118)
      assert_grad("outer wrt 1", function(t) return wsum(ms.outer(t, q)) end, p)
      assert_grad("outer wrt 2", function(t) return wsum(ms.outer(p, t)) end, q)
    end)

    it("diag of a vector and of a square matrix", function()
      assert_grad("diag(vector)", function(t) return wsum(ms.diag(t)) end, rn({4}, 121))
      assert_grad("diag(matrix)", function(t) return wsum(ms.diag(t)) end, rn({4, 4}, 122))
      assert_grad("t:diag()", function(t) return wsum(t:diag()) end, rn({3, 3}, 123))
    end)
  end)

  describe("views and structure", function()
    local x = rn({3, 4}, 131)
    local x3 = rn({2, 3, 4}, 132)
    local cases = {
      {"reshape", x, function(t) return t:reshape(2, 6) end},
      {"reshape{table}", x, function(t) return t:reshape{6, 2} end},
      {"view", x, function(t) return t:view(12) end},
      {"flatten of a transpose", x, function(t) return t:t():flatten() end},
      {"t()", x, function(t) return t:t() end},
      {"transpose(1, 3)", x3, function(t) return t:transpose(1, 3) end},
      {"permute{3, 1, 2}", x3, function(t) return t:permute{3, 1, 2} end},
      {"slice(2, 1, 4, 2)", x, function(t) return t:slice(2, 1, 4, 2) end},
      {"slice(1, 2, 3)", x, function(t) return t:slice(1, 2, 3) end},
      {"slice(3, -2, -1) of a 3-d", x3, function(t) return t:slice(3, -2, -1) end},
      {"select(2, 3)", x, function(t) return t:select(2, 3) end},
      {"select(1, -1) of a 3-d", x3, function(t) return t:select(1, -1) end},
      {"expand [3,1] -> [3,4]", rn({3, 1}, 133), function(t) return t:expand{3, 4} end},
      {"expand [4] -> [2,4]", rn({4}, 134), function(t) return t:expand(2, 4) end},
      {"index t[2]", x, function(t) return t[2] end},
      {"index t[-1]", x3, function(t) return t[-1] end},
      {"index t[{2, 1}] of a 3-d", x3, function(t) return t[{2, 1}] end},
      {"contiguous of a permute", x3, function(t) return t:permute{2, 3, 1}:contiguous() end},
      {"clone", x, function(t) return t:clone() end},
      {"views chained with arithmetic", x3,
        function(t) return ms.tanh(t:transpose(1, 2):slice(1, 2, 3)[1] * t[2]:slice(1, 1, 2)) end},
      {"sum_to [3,4] -> [1,4]", x, function(t) return ms.sum_to(t, {1, 4}) end},
      {"sum_to [3,4] -> [4]", x, function(t) return ms.sum_to(t, {4}) end},
      {"sum_to [2,3,4] -> [3,1]", x3, function(t) return ms.sum_to(t, {3, 1}) end},
    }
    for _, c in ipairs(cases) do
      it(c[1], function()
        assert_grad(c[1], function(t) return wsum(c[3](t)) end, c[2])
      end)
    end

    it("cat along each dimension, with respect to each part", function()
      local a, b = rn({2, 3}, 141), rn({1, 3}, 142)
      assert_grad("cat dim 1 wrt a", function(t) return wsum(ms.cat({t, b})) end, a)
      assert_grad("cat dim 1 wrt b", function(t) return wsum(ms.cat({a, t, a}, 1)) end, b)
      local c = rn({2, 2}, 143)
      assert_grad("cat dim 2 wrt a", function(t) return wsum(ms.cat({t, c}, 2)) end, a)
      assert_grad("cat dim 2 wrt c", function(t) return wsum(ms.cat({a, t}, -1)) end, c)
    end)

    it("index assignment into a fresh tensor is not recorded (the value is a constant)", function()
      local g = ms.grad(function(t)
        local buf = ms.zeros(3)
        buf[1] = 7
        return (t * buf):sum()
      end)(ms.tensor{1, 2, 3})
      assert.are.same({7, 0, 0}, g:totable())
    end)
  end)

  describe("losses", function()
    it("log_softmax along each dimension", function()
      local x = rn({3, 5}, 151)
      assert_grad("log_softmax(x, 2)", function(t) return wsum(ms.log_softmax(t, 2)) end, x)
      assert_grad("log_softmax(x, 1)", function(t) return wsum(ms.log_softmax(t, 1)) end, x)
      assert_grad("log_softmax(x) (last dim)", function(t) return wsum(ms.log_softmax(t)) end, x)
      assert_grad("log_softmax of a vector", function(t) return wsum(ms.log_softmax(t, 1)) end, rn({6}, 152))
    end)

    it("softmax_xent with 1-based labels", function()
      local logits = rn({5, 3}, 153)
      local labels = ms.tensor{1, 3, 2, 2, 1}
      assert_grad("softmax_xent", function(t) return wsum(ms.softmax_xent(t, labels)) end, logits)
      assert_grad("mean softmax_xent", function(t) return ms.softmax_xent(t, labels):mean() end, logits)
      -- closed form: d mean loss / d logits = (softmax - onehot) / n
      local g = ms.grad(function(t) return ms.softmax_xent(t, labels):mean() end)(logits)
      local L = logits:totable()
      for i = 1, 5 do
        local z = 0
        for j = 1, 3 do z = z + math.exp(L[i][j]) end
        for j = 1, 3 do
          local want = (math.exp(L[i][j]) / z - (labels[i] == j and 1 or 0)) / 5
          assert_num_close(g[{i, j}], want, 1e-12, ("softmax_xent grad [%d,%d]"):format(i, j))
        end
      end
    end)

    it("softmax_xent names a bad label and its example 1-based", function()
      assert.are.equal("softmax_xent: label 4 of example 2 is not a class index in 1..3",
        err_of(ms.softmax_xent, ms.zeros(2, 3), ms.tensor{1, 4}))
      assert.are.equal("softmax_xent: label 0 of example 1 is not a class index in 1..3",
        err_of(ms.softmax_xent, ms.zeros(2, 3), ms.tensor{0, 1}))
    end)
  end)

  describe("stop_gradient", function()
    it("blocks the derivative through its argument", function()
      local x = ms.tensor{1, -2, 3}
      local g = ms.grad(function(t) return (ms.stop_gradient(t) * t):sum() end)(x)
      assert.are.same({1, -2, 3}, g:totable()) -- x, not 2x
      local g2 = ms.grad(function(t) return ms.stop_gradient(t * t):sum() + t:sum() end)(x)
      assert.are.same({1, 1, 1}, g2:totable())
    end)
  end)

  it("value_and_grad returns the value and gradients for several argnums", function()
    local a, b = ms.tensor{1, 2}, ms.tensor{3, 5}
    local y, ga, gb = ms.value_and_grad(function(p, q) return ms.dot(p, q) * 2 end, {argnums = {1, 2}})(a, b)
    assert.are.equal(26, y:item())
    assert.are.same({6, 10}, ga:totable())
    assert.are.same({2, 4}, gb:totable())
    local g = ms.grad(function(p) return (p.w * p.w):sum() + p.s * 3 end)({w = a, s = 2})
    assert.are.same({2, 4}, g.w:totable())
    assert.are.equal(3, g.s)
  end)
end)

-- ---- second order ----

describe("second-order derivatives", function()
  after_each(function()
    assert.are.equal(0, ms.ad_depth())
  end)

  it("grad(grad(f)) of scalar functions matches closed-form second derivatives", function()
    local sig = function(z) return 1 / (1 + math.exp(-z)) end
    local cases = {
      {"x^3", function(x) return x * x * x end, function(x) return 6 * x end, 1.3},
      {"x ^ 2.5", function(x) return x ^ 2.5 end, function(x) return 2.5 * 1.5 * x ^ 0.5 end, 1.7},
      {"2 ^ x", function(x) return 2 ^ x end, function(x) return math.log(2) ^ 2 * 2 ^ x end, 0.8},
      {"exp", ms.exp, math.exp, 0.4},
      {"log", ms.log, function(x) return -1 / (x * x) end, 1.9},
      {"log1p", ms.log1p, function(x) return -1 / (1 + x) ^ 2 end, 0.6},
      {"expm1", ms.expm1, math.exp, -0.7},
      {"sqrt", ms.sqrt, function(x) return -0.25 * x ^ -1.5 end, 2.2},
      {"reciprocal", ms.reciprocal, function(x) return 2 / x ^ 3 end, 1.4},
      {"sin", ms.sin, function(x) return -math.sin(x) end, 0.9},
      {"cos", ms.cos, function(x) return -math.cos(x) end, 0.9},
      {"tanh", ms.tanh, function(x) local t = 1 - 2 / (math.exp(2 * x) + 1) return -2 * t * (1 - t * t) end, 0.5},
      {"sigmoid", ms.sigmoid, function(x) local s = sig(x) return s * (1 - s) * (1 - 2 * s) end, 0.3},
      {"softplus", ms.softplus, function(x) local s = sig(x) return s * (1 - s) end, -0.6},
      {"square", ms.square, function() return 2 end, 3.1},
      {"x / (1 + x^2)", function(x) return x / (1 + x * x) end,
        function(x) return (2 * x ^ 3 - 6 * x) / (1 + x * x) ^ 3 end, 0.7},
      {"atan2(x, 2)", function(x) return ms.atan2(x, 2) end,
        function(x) return -4 * x / (x * x + 4) ^ 2 end, 1.1},
      {"atan2(1, x)", function(x) return ms.atan2(1, x) end,
        function(x) return 2 * x / (1 + x * x) ^ 2 end, 0.9},
      {"x * exp(-x)", function(x) return x * ms.exp(-x) end,
        function(x) return (x - 2) * math.exp(-x) end, 0.35},
      {"maximum(x^2, 1)", function(x) return ms.maximum(x * x, 1) end, function() return 2 end, 1.5},
    }
    for _, c in ipairs(cases) do
      local d2 = ms.grad(ms.grad(c[2]))(c[4])
      assert.is_number(d2, c[1])
      assert_num_close(d2, c[3](c[4]), 1e-12, c[1])
    end
  end)

  it("third order: grad(grad(grad(x^4))) = 24 x", function()
    local d3 = ms.grad(ms.grad(ms.grad(function(x) return x ^ 4 end)))(1.25)
    assert_num_close(d3, 24 * 1.25, 1e-12, "x^4")
  end)

  it("grad(grad(f)) of a custom primitive whose VJP is written with tensor ops", function()
    local cube = ms.custom{
      name = "cube",
      forward = function(x) return x * x * x end,
      vjp = function(g, _, x) return 3 * g * x * x end,
    }
    assert_num_close(ms.grad(ms.grad(function(x) return cube(x) end))(2.0), 12, 1e-14, "cube''")
  end)

  describe("hvp against central differences of gradients", function()
    local A = rn({4, 6}, 201)
    local c6 = rn({6}, 202)
    local labels = ms.tensor{2, 1}
    local fs = {
      {"sum(tanh(x) * x)", function(x) return (ms.tanh(x) * x):sum() end},
      {"logsumexp", function(x) return x:logsumexp() end},
      {"norm", function(x) return x:norm() end},
      {"sum(exp(A x))", function(x) return ms.exp(ms.matvec(A, x) * 0.5):sum() end},
      {"sum(x^3 / (1 + x^2))", function(x) return (x ^ 3 / (1 + x * x)):sum() end},
      {"sum(softplus(x) * sigmoid(x))", function(x) return (ms.softplus(x) * ms.sigmoid(x)):sum() end},
      {"prod(x + 3)", function(x) return (x + 3):prod() end},
      {"sum(atan2(x, c))", function(x) return ms.atan2(x, c6 + 2):sum() end},
      {"sum(sin(outer(x, x)))", function(x) return ms.sin(ms.outer(x, x)):sum() end},
      {"softmax_xent of a reshape", function(x) return ms.softmax_xent(x:reshape(2, 3), labels):sum() end},
      {"log_softmax weighted", function(x) return wsum(ms.log_softmax(x:reshape(3, 2), 1)) end},
      {"matmul of views", function(x)
        local X = x:reshape(2, 3)
        return ms.tanh(ms.matmul(X, X:t())):sum()
      end},
      {"broadcast [3,1] * [2]", function(x)
        local a, b = x:slice(1, 1, 3):reshape(3, 1), x:slice(1, 4, 5)
        return wsum(ms.exp(a * b) + a / (1 + b * b))
      end},
      {"sqrt(1 + x^2) mean", function(x) return ms.sqrt(x * x + 1):mean() end},
      {"cat and select", function(x)
        local y = ms.cat({x, x * x})
        return (y:select(1, 2) * y:select(1, 9) + ms.log1p(ms.square(y)):sum())
      end},
    }
    local x = rn({6}, 203) * 0.5
    local v = rn({6}, 204)
    for _, c in ipairs(fs) do
      it(c[1], function()
        local name, f = c[1], c[2]
        local hv = ms.hvp(f, x, v)
        local h = 1e-5
        local g = ms.grad(f)
        local fd = (g(x + v * h) - g(x - v * h)) / (2 * h)
        assert_close(hv, fd, 1e-6, name .. " hvp vs differences")
        -- reverse-over-reverse gives the same product
        local rr = ms.grad(function(t) return ms.dot(ms.grad(f)(t), v) end)(x)
        assert_close(rr, hv, 1e-12, name .. " reverse-over-reverse vs forward-over-reverse")
      end)
    end
  end)

  it("hvp of 1/2 w^T H w is H v to 1e-12 for a random symmetric H", function()
    local n = 8
    local B = rn({n, n}, 211)
    local H = (B + B:t()) * 0.5
    local w, v = rn({n}, 212), rn({n}, 213)
    local f = function(t) return 0.5 * ms.dot(t, ms.matvec(H, t)) end
    local hv = ms.hvp(f, w, v)
    -- golden: H v with plain Lua loops
    local want = h.matvec(H:totable(), v:totable())
    assert_close(hv, ms.tensor(want), 1e-12, "hvp of a quadratic")
    -- gradient is H w, also exactly
    assert_close(ms.grad(f)(w), ms.matvec(H, w), 1e-12, "grad of a quadratic")
  end)
end)

-- ---- forward and reverse agree ----

describe("jvp and vjp are adjoint: <u, J v> = <J^T u, v>", function()
  after_each(function()
    assert.are.equal(0, ms.ad_depth())
  end)

  local pair_custom = ms.custom{
    name = "xy_plus_sin",
    nin = 2,
    forward = function(a, b) return a * b + ms.sin(a) end,
    vjp = function(g, _, a, b) return ms.sum_to(g * (b + ms.cos(a)), a:shape()), ms.sum_to(g * a, b:shape()) end,
    jvp = function(ta, tb, _, a, b) return ta * (b + ms.cos(a)) + a * tb end,
  }
  local cases = {
    {"tanh(x) * x", function(x) return ms.tanh(x) * x end, rn({3, 4}, 301)},
    {"broadcast [3,1] op [4]", function(p)
      local a, b = p[1], p[2]
      return a * b + ms.sin(a) - b / (1 + a * a) + ms.maximum(a, b) + ms.atan2(a, b + 3)
    end, {rn({3, 1}, 302), rn({4}, 303)}},
    {"number op tensor", function(p) return 2 * p.a - 3 / (p.a * p.a + 1) + p.s * p.a end,
      {a = rn({5}, 304), s = rn({}, 305)}},
    {"matmul", function(p) return ms.matmul(p[1], p[2]) end, {rn({3, 4}, 306), rn({4, 2}, 307)}},
    {"matmul of a transpose and matvec", function(p)
      return ms.matvec(ms.matmul(p[1]:t(), p[1]), p[2])
    end, {rn({3, 4}, 308), rn({4}, 309)}},
    {"dot and outer", function(p) return ms.outer(p[1], p[2]) * ms.dot(p[1], p[1]) end,
      {rn({3}, 310), rn({2}, 311)}},
    {"reductions with keepdim", function(x)
      return ms.cat({x:sum(1, true), x:mean(1, true), x:max(1, true), x:norm(1, true), x:logsumexp(1, true),
        x:prod(1, true)})
    end, pos({2, 5}, 312)},
    {"log_softmax", function(x) return ms.log_softmax(x, 2) end, rn({3, 5}, 313)},
    {"softmax_xent", function(x) return ms.softmax_xent(x, ms.tensor{3, 1, 2, 2}) end, rn({4, 3}, 314)},
    {"views", function(x)
      return ms.cat({x:permute{3, 1, 2}:reshape(4, 6), x:transpose(1, 3):slice(2, 1, 3, 2):reshape(4, 4)}, 2)
    end, rn({2, 3, 4}, 315)},
    {"where, clamp, diag, expand, sum_to", function(x)
      local c = ms.gt(rn({4, 4}, 316), 0)
      return ms.where(c, ms.clamp(x, -0.5, 0.5), ms.diag(ms.diag(x)) * 2) +
        ms.sum_to(x:expand(3, 4, 4), {4, 1}) * x
    end, rn({4, 4}, 317)},
    {"custom primitive with both rules", function(p) return pair_custom(p[1], p[2]) end,
      {rn({3, 1}, 318), rn({4}, 319)}},
  }
  local function like(x, seed)
    if ms.is_tensor(x) then return rn(x:shape(), seed) end
    local t = {}
    local k = 0
    for key, v in pairs(x) do k = k + 1; t[key] = like(v, seed * 10 + k) end
    return t
  end
  for i, c in ipairs(cases) do
    it(c[1], function()
      local f, x = c[2], c[3]
      local v = like(x, 400 + i)
      local y, jv = ms.jvp(f, x, v)
      local u = rn(jv:shape(), 500 + i)
      local y2, pullback = ms.vjp(f, x)
      local jtu = pullback(u)
      assert.are.equal(0, ms.max_abs_diff(y, y2))
      local lhs, rhs = inner(u, jv), inner(jtu, v)
      assert_num_close(lhs, rhs, 1e-12, c[1] .. " <u, Jv> vs <J^T u, v>")
      -- and both against a central difference of f along v: J v ~ (f(x + h v) - f(x - h v)) / 2h
      local function shift(p, q, s)
        if ms.is_tensor(p) then return p + q * s end
        local t = {}
        for k, e in pairs(p) do t[k] = shift(e, q[k], s) end
        return t
      end
      local h = 1e-6
      local fd = (f(shift(x, v, h)) - f(shift(x, v, -h))) / (2 * h)
      assert_close(jv, fd, 1e-7, c[1] .. " jvp vs differences")
    end)
  end

  it("a pullback can be called several times", function()
    local _, pb = ms.vjp(function(x) return x * x end, ms.tensor{1, 2})
    assert.are.same({2, 4}, pb(ms.tensor{1, 1}):totable())
    assert.are.same({6, 12}, pb(3):totable())
  end)
end)

-- ---- meta-gradient through unrolled optimization ----

describe("differentiating through 100 unrolled gradient steps", function()
  it("matches the closed-form derivative of f(w_100) with respect to the step size", function()
    local lambda = {1, 1.7, 2.5, 4, 6.3, 10}
    local n, T, eta = #lambda, 100, 0.05
    local Q = ms.qr(ms.randn({n, n}, {seed = 601}))
    -- Q is orthogonal
    assert_close(ms.matmul(Q:t(), Q), ms.eye(n), 1e-13, "Q^T Q")
    local H = ms.matmul(ms.matmul(Q, ms.diag(ms.tensor(lambda))), Q:t())
    local w0 = ms.randn({n}, {seed = 602})
    local c = ms.matvec(Q:t(), w0):totable()

    local function f(w) return 0.5 * ms.dot(w, ms.matvec(H, w)) end
    local inner_grad = ms.grad(f)
    local function unrolled(step)
      local w = w0
      for _ = 1, T do w = w - step * inner_grad(w) end
      return f(w)
    end
    local value, deta = ms.value_and_grad(unrolled)(eta)
    assert.is_number(deta)

    local want_f, want_d = 0, 0
    for i = 1, n do
      local l, ci = lambda[i], c[i]
      want_f = want_f + 0.5 * l * ci * ci * (1 - eta * l) ^ (2 * T)
      want_d = want_d - T * l * l * ci * ci * (1 - eta * l) ^ (2 * T - 1)
    end
    assert.is_true(math.abs(value:item() - want_f) <= 1e-8 * math.abs(want_f),
      ("f(w_T): %.17g vs %.17g"):format(value:item(), want_f))
    assert.is_true(math.abs(deta - want_d) <= 1e-8 * math.abs(want_d),
      ("d f(w_T) / d eta: %.17g vs closed form %.17g"):format(deta, want_d))
    assert.are.equal(0, ms.ad_depth())
  end)
end)

-- ---- custom primitives ----

describe("custom primitives", function()
  after_each(function()
    assert.are.equal(0, ms.ad_depth())
  end)

  local function cube_with(vjp)
    return ms.custom{
      name = "cube",
      forward = function(x) return x * x * x end,
      vjp = vjp,
      jvp = function(t, _, x) return 3 * x * x * t end,
    }
  end

  it("check_grad catches a wrong VJP and passes the correct one", function()
    local x = ms.tensor{0.5, -1.2, 2}
    local wrong = cube_with(function(g, _, t) return g * t * t end) -- missing the factor 3
    local ok, err, report = ms.check_grad(function(t) return wsum(wrong(t)) end, x)
    assert.is_false(ok)
    assert.is_true(err > 1e3, report)
    assert.truthy(report:find("analytic", 1, true))
    local right = cube_with(function(g, _, t) return 3 * g * t * t end)
    local ok2, err2, report2 = ms.check_grad(function(t) return wsum(right(t)) end, x)
    assert.is_true(ok2, report2)
    assert.is_true(err2 <= 1)
  end)

  it("uses its JVP rule under jvp, and under hvp (forward over reverse)", function()
    local calls = 0
    local cube = ms.custom{
      name = "cube",
      forward = function(x) return x * x * x end,
      vjp = function(g, _, x) return 3 * g * x * x end,
      jvp = function(t, _, x) calls = calls + 1; return 3 * x * x * t end,
    }
    local x, v = ms.tensor{1, -2, 0.5}, ms.tensor{1, 0.5, 2}
    local y, jv = ms.jvp(function(t) return cube(t) end, x, v)
    assert.are.same({1, -8, 0.125}, y:totable())
    assert.are.same({3, 6, 1.5}, jv:totable()) -- 3 x^2 v
    assert.are.equal(1, calls)
    -- the VJP's ops are recorded on the forward level: hvp = 6 x v element-wise
    local hv = ms.hvp(function(t) return cube(t):sum() end, x, v)
    assert.are.same({6, -6, 6}, hv:totable())
  end)

  it("takes several inputs, numbers included, and nil means a zero gradient", function()
    local hyp = ms.custom{
      name = "hypot",
      nin = 2,
      forward = function(a, b) return ms.sqrt(a * a + b * b) end,
      vjp = function(g, out, a, b) return g * a / out, g * b / out end,
    }
    local a, b = rn({4}, 701), away({4}, 702)
    assert_grad("hypot wrt a", function(t) return wsum(hyp(t, b)) end, a)
    assert_grad("hypot wrt b", function(t) return wsum(hyp(a, t)) end, b)
    assert_grad("hypot(3, t)", function(t) return wsum(hyp(3, t)) end, b)
    local first_only = ms.custom{
      name = "first_only", nin = 2,
      forward = function(p, q) return p * q end,
      vjp = function(g, _, _, q) return g * q, nil end,
    }
    local ga, gb = ms.grad(function(p, q) return first_only(p, q):sum() end, {argnums = {1, 2}})(a, b)
    assert.are.equal(0, ms.max_abs_diff(ga, b))
    assert.are.same({0, 0, 0, 0}, gb:totable())
  end)

  it("runs its rules on the calling thread even after a rule used a coroutine", function()
    -- A rule applies a custom primitive inside a coroutine that stays suspended (or is
    -- finished and collected): later rules must not run on that coroutine's stack.
    local seen
    local sq = ms.custom{name = "sq", forward = function(x) return x * x end,
      vjp = function(g, _, x) seen = coroutine.running(); return 2 * g * x end}
    local parked
    local co_op = ms.custom{name = "co_op", forward = function(x) return x * 3 end,
      vjp = function(g)
        parked = coroutine.wrap(function() sq(ms.tensor{1}); coroutine.yield() end)
        parked()
        return g * 3
      end}
    local g = ms.grad(function(x) return co_op(sq(x)):sum() end)(ms.tensor{1, 2})
    assert.are.same({6, 12}, g:totable())
    assert.are.equal(coroutine.running(), seen)
  end)

  it("runs forward outside every level (not recorded) and works with no level at all", function()
    local sq = ms.custom{name = "sq", forward = function(x) return x * x end,
      vjp = function(g, _, x) return 2 * g * x end}
    assert.are.same({4, 9}, sq(ms.tensor{2, 3}):totable())
    assert.are.equal(6, ms.grad(function(x) return sq(x) end)(3))
  end)
end)

-- ---- errors at the boundary ----

describe("errors", function()
  after_each(function()
    assert.are.equal(0, ms.ad_depth())
  end)

  it("grad of a function returning a non-scalar", function()
    assert.are.equal("grad: the function must return a scalar (one element), got shape [2]",
      err_of(ms.grad(function(x) return x * 2 end), ms.tensor{1, 2}))
    assert.are.equal("grad: the function must return a scalar tensor or a number, got string",
      err_of(ms.grad(function() return "y" end), ms.tensor{1, 2}))
    assert.are.equal("grad: the function must return a scalar tensor or a number, got nil",
      err_of(ms.value_and_grad(function() end), 1.0))
  end)

  it("a watched input modified in place after being saved", function()
    local msg = err_of(ms.grad(function(x)
      local y = x * x
      x[1] = 5
      return y:sum()
    end), ms.tensor{1, 2, 3})
    assert.are.equal("gradient: input 1 of 'mul' (step 2 of the tape) was modified in place after being " ..
      "saved (version 1, saved at 0)", msg)
  end)

  it("a saved intermediate modified in place", function()
    local msg = err_of(ms.grad(function(x)
      local y = ms.exp(x)
      local z = ms.sin(y)
      y:fill(0)
      return z:sum()
    end), ms.tensor{1, 2, 3})
    assert.are.equal("gradient: input 1 of 'sin' (step 3 of the tape) was modified in place after being " ..
      "saved (version 1, saved at 0)", msg)
    -- the output of exp is saved by exp itself (its derivative is its output)
    local msg2 = err_of(ms.grad(function(x)
      local y = ms.exp(x)
      local s = y:sum()
      y:assign(ms.tensor{0, 0, 0})
      return s
    end), ms.tensor{1, 2, 3})
    assert.truthy(msg2:find("modified in place", 1, true), msg2)
  end)

  it("a custom VJP returning the wrong shape names the primitive and the shapes", function()
    local bad = ms.custom{name = "badshape", forward = function(x) return x * 2 end,
      vjp = function() return ms.zeros(2) end}
    assert.are.equal("gradient: the reverse-mode rule of 'badshape' returned shape [2] for input 1 of shape [3]",
      err_of(ms.grad(function(x) return bad(x):sum() end), ms.tensor{1, 2, 3}))
    local notensor = ms.custom{name = "notensor", forward = function(x) return x end,
      vjp = function() return "oops" end}
    assert.are.equal("notensor: vjp must return a tensor or nil (result 1), got string",
      err_of(ms.grad(function(x) return notensor(x):sum() end), ms.tensor{1, 2}))
  end)

  it("a custom JVP returning the wrong shape names the primitive and the shapes", function()
    local bad = ms.custom{name = "badjvp", forward = function(x) return x * 2 end,
      jvp = function() return ms.zeros(2) end}
    assert.are.equal("badjvp: forward-mode rule returned shape [2] for an output of shape [3]",
      err_of(ms.jvp, function(x) return bad(x) end, ms.tensor{1, 2, 3}, ms.tensor{1, 1, 1}))
  end)

  it("an error inside a custom rule surfaces with its traceback", function()
    local boom = ms.custom{name = "boom", forward = function(x) return x * 2 end,
      vjp = function() error("vjp exploded") end,
      jvp = function() error("jvp exploded") end}
    local msg = err_of(ms.grad(function(x) return boom(x):sum() end), ms.tensor{1, 2})
    assert.truthy(msg:find("boom: error in vjp: ", 1, true), msg)
    assert.truthy(msg:find("vjp exploded", 1, true), msg)
    assert.truthy(msg:find("stack traceback", 1, true), msg)
    assert.truthy(msg:find("autodiff_spec.lua", 1, true), msg)
    local msg2 = err_of(ms.jvp, function(x) return boom(x) end, ms.tensor{1, 2}, ms.tensor{1, 1})
    assert.truthy(msg2:find("boom: error in jvp: ", 1, true), msg2)
    assert.truthy(msg2:find("stack traceback", 1, true), msg2)
    local fwd = ms.custom{name = "badfwd", forward = function() error("forward exploded") end}
    local msg3 = err_of(fwd, ms.tensor{1})
    assert.truthy(msg3:find("badfwd: error in forward: ", 1, true), msg3)
    assert.truthy(msg3:find("stack traceback", 1, true), msg3)
  end)

  it("a custom primitive without the rule that is needed", function()
    local fwd_only = ms.custom{name = "fwd_only", forward = function(x) return x * 2 end}
    assert.are.equal("fwd_only: custom primitive has no vjp rule",
      err_of(ms.grad(function(x) return fwd_only(x):sum() end), ms.tensor{1, 2}))
    assert.are.equal("fwd_only: custom primitive has no jvp rule",
      err_of(ms.jvp, function(x) return fwd_only(x) end, ms.tensor{1, 2}, ms.tensor{1, 1}))
  end)

  it("transforms of something that is not a function", function()
    assert.are.equal("grad: expected a function, got number", err_of(ms.grad, 3))
    assert.are.equal("grad: expected a function, got nil", err_of(ms.grad))
    assert.are.equal("value_and_grad: expected a function, got table", err_of(ms.value_and_grad, {}))
    assert.are.equal("jvp: expected a function, got string", err_of(ms.jvp, "f", 1, 1))
    assert.are.equal("vjp: expected a function, got boolean", err_of(ms.vjp, true, 1))
    assert.are.equal("hvp: expected a function, got number", err_of(ms.hvp, 1, 1, 1))
    assert.are.equal("check_grad: expected a function, got number", err_of(ms.check_grad, 1, 1))
  end)

  it("an argument that cannot be differentiated", function()
    assert.are.equal("grad: argument 1: expected a tensor, a number or a table of them at argument, got string",
      err_of(ms.grad(function(x) return x end), "x"))
    assert.are.equal("grad: argument 2 is nil (the function is differentiated with respect to it)",
      err_of(ms.grad(function(x) return x end, {argnums = 2}), 1.0))
  end)

  it("the autodiff depth is back to 0 after an error inside f", function()
    local function fail() error("inside f") end
    local x = ms.tensor{1, 2}
    local probes = {
      function() return ms.grad(function(t) local y = t * t; fail(); return y end)(x) end,
      function() return ms.value_and_grad(fail)(x) end,
      function() return ms.grad(ms.grad(function(t) return fail(t) end))(1.0) end,
      function() return ms.grad(function(t) return ms.grad(fail)(t) end)(1.0) end,
      function() return ms.jvp(fail, x, x) end,
      function() return ms.vjp(fail, x) end,
      function() return ms.hvp(fail, x, x) end,
      function() return ms.jvp(ms.grad(function(t) return (t * t):sum() + fail() end), x, x) end,
      function() return ms.check_grad(fail, x) end,
    }
    for i, probe in ipairs(probes) do
      local msg = err_of(probe)
      assert.are.equal("inside f", msg, "probe " .. i)
      assert.are.equal(0, ms.ad_depth(), "probe " .. i)
    end
    -- and differentiation still works afterwards
    assert.are.same({2, 4}, ms.grad(function(t) return (t * t):sum() end)(x):totable())
  end)
end)

describe("indexing a traced tensor", function()
  local ms = require "metastep"
  it("keeps elements as 0-d tensors so derivatives flow through t[i] and t[{i, j}]", function()
    local g = ms.grad(function(w) return w[1] * w[2] + w[{3}] ^ 2 end)(ms.tensor{2, 3, 4})
    assert.are.same({3, 2, 8}, g:totable())
    local h = ms.grad(function(m) return m[{1, 2}] * 3 end)(ms.ones(2, 2))
    assert.are.same({{0, 3}, {0, 0}}, h:totable())
  end)
  it("gives plain numbers outside any transform", function()
    assert.are.equal("number", type(ms.tensor{1, 2}[1]))
  end)
end)
