-- Element-wise arithmetic, broadcasting, unary math, comparisons and reductions,
-- checked against plain Lua arithmetic on the same inputs.
local ms = require "metastep"
local h = dofile((debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "tests/lua") .. "/helpers.lua")
local assert_close = h.assert_nested_close

local nan, inf = 0 / 0, math.huge

local function isnan(x) return x ~= x end

local function lua_random(shape) return h.lua_random(shape, 2) end

-- Applies f to every number of a nested table.
local function map(t, f)
  if type(t) == "number" then return f(t) end
  local r = {}
  for i = 1, #t do r[i] = map(t[i], f) end
  return r
end

local function map2(a, b, f)
  if type(a) == "number" then return f(a, b) end
  local r = {}
  for i = 1, #a do r[i] = map2(a[i], b[i], f) end
  return r
end

-- Closed forms written independently of the engine.
local function lua_tanh(x)
  if x > 20 then return 1 elseif x < -20 then return -1 end
  local e = math.exp(2 * x)
  return (e - 1) / (e + 1)
end

local function half_even(x)
  local f = math.floor(x)
  local d = x - f
  if d < 0.5 then return f elseif d > 0.5 then return f + 1 end
  return f % 2 == 0 and f or f + 1
end

local unary_ref = {
  neg = function(x) return -x end,
  abs = math.abs,
  exp = math.exp,
  log = math.log, -- on inputs shifted into the domain below
  log1p = function(x) return math.log(1 + x) end,
  expm1 = function(x) return math.exp(x) - 1 end,
  sqrt = math.sqrt,
  square = function(x) return x * x end,
  reciprocal = function(x) return 1 / x end,
  tanh = lua_tanh,
  sigmoid = function(x) return 1 / (1 + math.exp(-x)) end,
  relu = function(x) return x > 0 and x or 0 end,
  softplus = function(x) return math.log(1 + math.exp(x)) end,
  sin = math.sin,
  cos = math.cos,
  sign = function(x) return x > 0 and 1 or (x < 0 and -1 or 0) end,
  floor = math.floor,
  ceil = math.ceil,
  round = half_even,
  isfinite = function(x) return (x == x and x ~= inf and x ~= -inf) and 1 or 0 end,
}

describe("binary arithmetic", function()
  math.randomseed(5)
  local A, B = lua_random{3, 4}, lua_random{3, 4}
  local a, b = ms.tensor(A), ms.tensor(B)

  local ref = {
    add = function(x, y) return x + y end,
    sub = function(x, y) return x - y end,
    mul = function(x, y) return x * y end,
    div = function(x, y) return x / y end,
    maximum = math.max,
    minimum = math.min,
    atan2 = function(y, x) return math.atan(y, x) end,
    lt = function(x, y) return x < y and 1 or 0 end,
    le = function(x, y) return x <= y and 1 or 0 end,
    gt = function(x, y) return x > y and 1 or 0 end,
    ge = function(x, y) return x >= y and 1 or 0 end,
    eq = function(x, y) return x == y and 1 or 0 end,
    ne = function(x, y) return x ~= y and 1 or 0 end,
  }

  for name, f in pairs(ref) do
    it(name .. " matches Lua element by element, as a function and a method", function()
      local expected = map2(A, B, f)
      assert_close(expected, ms[name](a, b):totable(), 1e-15, name)
      assert_close(expected, a[name](a, b):totable(), 1e-15, name)
    end)
  end

  it("pow matches Lua on positive bases", function()
    local P = map(A, function(x) return math.abs(x) + 0.1 end)
    assert_close(map2(P, B, function(x, y) return x ^ y end), ms.pow(ms.tensor(P), b):totable(), 1e-14)
  end)

  it("operators match the named ops, with numbers on either side", function()
    assert_close(map2(A, B, ref.add), (a + b):totable(), 0)
    assert_close(map2(A, B, ref.sub), (a - b):totable(), 0)
    assert_close(map2(A, B, ref.mul), (a * b):totable(), 0)
    assert_close(map2(A, B, ref.div), (a / b):totable(), 0)
    assert_close(map(A, function(x) return x + 2 end), (a + 2):totable(), 0)
    assert_close(map(A, function(x) return 2 - x end), (2 - a):totable(), 0)
    assert_close(map(A, function(x) return 3 / x end), (3 / a):totable(), 0)
    assert_close(map(A, function(x) return x * x end), (a ^ 2):totable(), 1e-15)
    assert_close(map(A, function(x) return 2 ^ x end), (2 ^ a):totable(), 1e-15)
    assert_close(map(A, function(x) return -x end), (-a):totable(), 0)
    assert.are.equal(3, ms.add(1, 2):item())
  end)

  it("maximum and minimum propagate NaN from either side", function()
    local x, y = ms.tensor{1, nan, 3}, ms.tensor{nan, 2, 1}
    assert_close({nan, nan, 3}, ms.maximum(x, y):totable(), 0)
    assert_close({nan, nan, 1}, ms.minimum(x, y):totable(), 0)
  end)

  it("follows IEEE for division by zero", function()
    assert_close({inf, -inf, nan}, (ms.tensor{1, -1, 0} / 0):totable(), 0)
  end)

  it("compares one-element tensors with < and <=", function()
    assert.is_true(ms.tensor(1) < ms.tensor(2))
    assert.is_true(ms.tensor{2} <= 2)
    assert.is_false(3 < ms.tensor{{2}})
    assert.is_true(ms.tensor(2) > 1) -- Lua turns > into a swapped <
  end)
end)

describe("broadcasting", function()
  it("adds [3,1] and [4] into [3,4]", function()
    local col = {{1}, {2}, {3}}
    local row = {10, 20, 30, 40}
    local r = ms.tensor(col) + ms.tensor(row)
    assert.are.same({3, 4}, r:shape())
    local expected = {}
    for i = 1, 3 do
      expected[i] = {}
      for j = 1, 4 do expected[i][j] = col[i][1] + row[j] end
    end
    assert.are.same(expected, r:totable())
  end)

  it("broadcasts 0-d tensors, size-1 axes and strided views", function()
    local m = ms.arange(6):view(2, 3)
    assert.are.same({{5, 6, 7}, {8, 9, 10}}, (m + ms.tensor(5)):totable())
    assert.are.same({{0, 2, 4}, {3, 5, 7}}, (m + ms.tensor{{0, 1, 2}}):totable())
    -- a transposed operand: m:t() is [3,2]
    assert.are.same({{0, 4}, {2, 6}, {4, 8}}, (m:t() + ms.tensor{{0, 1}, {1, 2}, {2, 3}}):totable())
    assert.are.same({2, 3, 4}, (ms.zeros(2, 1, 4) * ms.ones(3, 1)):shape())
  end)

  it("rejects shapes that do not broadcast", function()
    assert.has_error(function() return ms.zeros(3, 2) + ms.zeros(3) end, "add: shapes [3,2] and [3] do not broadcast")
    assert.has_error(function() return ms.mul(ms.zeros(2, 3), ms.zeros(3, 2)) end,
      "mul: shapes [2,3] and [3,2] do not broadcast")
  end)
end)

describe("unary math", function()
  math.randomseed(9)
  local X = lua_random{4, 5}
  for name, f in pairs(unary_ref) do
    it(name .. " matches the Lua closed form", function()
      -- keep inputs in each function's domain
      local input, ref = X, f
      if name == "log" then
        input, ref = map(X, function(x) return math.abs(x) + 0.5 end), math.log
      elseif name == "sqrt" then
        input, ref = map(X, math.abs), math.sqrt
      elseif name == "log1p" then
        input = map(X, function(x) return math.abs(x) * 0.4 end)
      end
      local t = ms.tensor(input)
      local expected = map(input, ref)
      -- log1p/expm1/softplus/tanh: the Lua forms lose a few ulps, hence 1e-13
      assert_close(expected, ms[name](t):totable(), 1e-13, name)
      assert_close(expected, t[name](t):totable(), 1e-13, name)
    end)
  end

  it("accept numbers and give 0-d tensors", function()
    assert.are.equal(0, ms.tensor(ms.sin(0)):item())
    assert.are.same({}, ms.exp(1):shape())
    assert.are.equal(math.exp(1), ms.exp(1):item())
  end)

  it("handle special values", function()
    assert_close({0, 1, 0.5}, ms.sigmoid(ms.tensor{-inf, inf, 0}):totable(), 0)
    assert_close({0, 1000, math.log(2)}, ms.softplus(ms.tensor{-1000, 1000, 0}):totable(), 1e-15)
    assert_close({0, 2, 2, -2, -0.0}, ms.round(ms.tensor{0.5, 1.5, 2.5, -1.5, -0.5}):totable(), 0)
    assert_close({1, -1, 0, nan}, ms.sign(ms.tensor{3, -inf, 0, nan}):totable(), 0)
    assert_close({1, 0, 0, 0}, ms.isfinite(ms.tensor{1, inf, -inf, nan}):totable(), 0)
    assert_close({nan, -inf}, ms.log(ms.tensor{-1, 0}):totable(), 0)
  end)
end)

describe("reductions", function()
  math.randomseed(21)
  local X = lua_random{3, 4, 5}
  local x = ms.tensor(X)
  local dims = {3, 4, 5}

  -- Lua reference: reduce along dim d (1-based) of the nested table, or over everything.
  local function get(t, idx) for _, i in ipairs(idx) do t = t[i] end return t end

  local function each_index(shape, f, idx, depth)
    idx, depth = idx or {}, depth or 1
    if depth > #shape then return f(idx) end
    for i = 1, shape[depth] do
      idx[depth] = i
      each_index(shape, f, idx, depth + 1)
    end
    idx[depth] = nil
  end

  local fold = {
    sum = function(v) local s = 0 for _, e in ipairs(v) do s = s + e end return s end,
    mean = function(v) local s = 0 for _, e in ipairs(v) do s = s + e end return s / #v end,
    max = function(v) local m = -inf for _, e in ipairs(v) do m = math.max(m, e) end return m end,
    min = function(v) local m = inf for _, e in ipairs(v) do m = math.min(m, e) end return m end,
    prod = function(v) local p = 1 for _, e in ipairs(v) do p = p * e end return p end,
    norm = function(v) local s = 0 for _, e in ipairs(v) do s = s + e * e end return math.sqrt(s) end,
    argmax = function(v) local k = 1 for i, e in ipairs(v) do if e > v[k] then k = i end end return k end,
    argmin = function(v) local k = 1 for i, e in ipairs(v) do if e < v[k] then k = i end end return k end,
    logsumexp = function(v) local s = 0 for _, e in ipairs(v) do s = s + math.exp(e) end return math.log(s) end,
  }

  local function reduce_dim(f, d)
    local out_shape = {}
    for i, n in ipairs(dims) do if i ~= d then out_shape[#out_shape + 1] = n end end
    local out = {}
    each_index(out_shape, function(idx)
      local v = {}
      for k = 1, dims[d] do
        local full = {}
        local j = 1
        for i = 1, #dims do
          if i == d then full[i] = k else full[i] = idx[j]; j = j + 1 end
        end
        v[#v + 1] = get(X, full)
      end
      local r = out
      for i = 1, #idx - 1 do r[idx[i]] = r[idx[i]] or {}; r = r[idx[i]] end
      r[idx[#idx]] = f(v)
    end)
    return out
  end

  for name, f in pairs(fold) do
    it(name .. " matches Lua loops over everything and along each dimension", function()
      local flat = {}
      each_index(dims, function(idx) flat[#flat + 1] = get(X, idx) end)
      local all = x[name](x)
      assert.are.same({}, all:shape())
      assert_close(f(flat), all:item(), 1e-13, name .. " all")
      for d = 1, 3 do
        assert_close(reduce_dim(f, d), ms[name](x, d):totable(), 1e-13, name .. " dim " .. d)
        assert_close(reduce_dim(f, d), ms[name](x, d - 4):totable(), 1e-13, name .. " dim " .. (d - 4))
      end
    end)
  end

  it("keep the reduced dimension with keepdim", function()
    assert.are.same({3, 1, 5}, x:sum(2, true):shape())
    assert.are.same({1, 1, 1}, x:max(nil, true):shape())
    local m = ms.tensor{{1, 2}, {3, 4}}
    assert.are.same({{3}, {7}}, m:sum(2, true):totable())
    assert.are.same({{4, 6}}, m:sum(1, true):totable())
  end)

  it("reduce strided views like their copies", function()
    local t = x:permute{3, 1, 2}:slice(2, 1, 3, 2)
    local c = t:contiguous()
    for name in pairs(fold) do
      assert_close(c[name](c):item(), t[name](t):item(), 1e-13, name)
      assert_close(c[name](c, 3):totable(), t[name](t, 3):totable(), 1e-13, name)
    end
  end)

  it("follow the documented conventions for special inputs", function()
    assert.are.equal(2, ms.argmax(ms.tensor{1, 5, 5}):item()) -- first index of the max, 1-based
    assert.are.equal(3, ms.argmin(ms.tensor{1, 5, nan}):item()) -- NaN counts as the extreme
    assert.is_true(isnan(ms.max(ms.tensor{1, nan, 2}):item()))
    assert.are.equal(0, ms.sum(ms.zeros(0)):item())
    assert.are.equal(1, ms.prod(ms.zeros(0)):item())
    assert.is_true(isnan(ms.mean(ms.zeros(0)):item()))
    assert.are.equal(-inf, ms.logsumexp(ms.zeros(0)):item())
    assert.are.equal(1000 + math.log(2), ms.logsumexp(ms.tensor{1000, 1000}):item())
    -- overflowing squares take the rescaled path: 3-4-5 within an ulp or two
    assert_close(5e200, ms.norm(ms.tensor{3e200, 4e200}):item(), 1e-15)
    assert.has_error(function() ms.max(ms.zeros(0)) end, "max: cannot reduce empty tensor of shape [0]")
  end)
end)

describe("where, clamp, all_finite, max_abs_diff", function()
  it("where picks element-wise with broadcasting", function()
    local c = ms.tensor{1, 0, 1}
    assert.are.same({10, 2, 10}, ms.where(c, 10, ms.tensor{1, 2, 3}):totable())
    assert.are.same({{1, 0, 1}, {5, 5, 5}}, ms.where(ms.tensor{{1}, {0}}, c, 5):totable())
    assert.are.same({7, -1, 7}, c:where(7, -1):totable())
  end)

  it("clamp limits to [lo, hi] and keeps NaN", function()
    assert_close({-1, 0.5, 1, nan}, ms.clamp(ms.tensor{-5, 0.5, 5, nan}, -1, 1):totable(), 0)
    assert.are.same({0, 3}, ms.tensor{-2, 3}:clamp(0):totable())
    assert.are.same({-2, 1}, ms.tensor{-2, 3}:clamp(nil, 1):totable())
  end)

  it("all_finite and max_abs_diff", function()
    assert.is_true(ms.all_finite(ms.tensor{1, 2}))
    assert.is_false(ms.all_finite(ms.tensor{1, nan}))
    assert.is_false(ms.tensor{-inf}:all_finite())
    assert.is_true(ms.all_finite(ms.zeros(0)))
    assert.are.equal(3, ms.max_abs_diff(ms.tensor{1, 5}, ms.tensor{1, 2}))
    assert.are.equal(1, ms.max_abs_diff(ms.tensor{{1, 2}}, ms.tensor{2}))
    assert.are.equal(0, ms.max_abs_diff(ms.tensor{inf}, ms.tensor{inf}))
    assert.is_true(isnan(ms.max_abs_diff(ms.tensor{nan}, ms.tensor{1})))
  end)

  it("allclose compares shapes and values", function()
    assert.is_true(ms.allclose(ms.tensor{1, 2}, ms.tensor{1, 2 + 1e-13}))
    assert.is_false(ms.allclose(ms.tensor{1, 2}, ms.tensor{1, 2.1}))
    assert.is_false(ms.allclose(ms.tensor{1, 2}, ms.tensor{{1, 2}}))
    assert.is_true(ms.allclose(ms.tensor{1, 2}, ms.tensor{1, 2.1}, 0.1))
  end)
end)
