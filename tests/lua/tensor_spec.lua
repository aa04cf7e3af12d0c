-- Tensor construction, inspection, views, indexing, totable, tostring and release.
-- Golden values are written out by hand or computed with plain Lua loops.
local ms = require "metastep"
local h = dofile((debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "tests/lua") .. "/helpers.lua")

local function close(a, b, tol)
  return math.abs(a - b) <= (tol or 0)
end

-- A random nested table of the given shape (Lua's own generator, seeded).
local function lua_random(shape) return h.lua_random(shape, 1) end

describe("construction", function()
  it("builds from nested tables", function()
    local t = ms.tensor{{1, 2, 3}, {4, 5, 6}}
    assert.are.same({2, 3}, t:shape())
    assert.are.same({{1, 2, 3}, {4, 5, 6}}, t:totable())
    assert.are.equal(6, t[{2, 3}])
  end)

  it("builds a 0-d tensor from a number", function()
    local t = ms.tensor(2.5)
    assert.are.equal(0, t:ndim())
    assert.are.same({}, t:shape())
    assert.are.equal(1, t:numel())
    assert.are.equal(2.5, t:item())
  end)

  it("copies a tensor into fresh storage", function()
    local a = ms.tensor{1, 2}
    local b = ms.tensor(a)
    assert.is_false(a:shares_storage(b))
    b[1] = 10
    assert.are.same({1, 2}, a:totable())
    assert.are.same({10, 2}, b:totable())
  end)

  it("builds empty tensors from empty tables", function()
    assert.are.same({0}, ms.tensor{}:shape())
    assert.are.same({2, 0}, ms.tensor{{}, {}}:shape())
  end)

  it("builds 8-d tensors and rejects 9 levels", function()
    local t = {{{{{{{{7}}}}}}}}
    assert.are.same({1, 1, 1, 1, 1, 1, 1, 1}, ms.tensor(t):shape())
    assert.has_error(function() ms.tensor{t} end, "tensor: nested table deeper than 8 levels")
  end)

  it("rejects ragged and non-numeric tables", function()
    assert.has_error(function() ms.tensor{{1, 2}, {3}} end,
      "tensor: ragged nested table: [2] has 1 elements, expected 2")
    assert.has_error(function() ms.tensor{{}, {1}} end, "tensor: ragged nested table: [2] has 1 elements, expected 0")
    assert.has_error(function() ms.tensor{1, "2"} end, "tensor: expected a number at [2], got string")
    assert.has_error(function() ms.tensor{{1}, 2} end, "tensor: expected a table at [2], got number")
    assert.has_error(function() ms.tensor(true) end,
      "bad argument #1 to 'tensor' (table, number or tensor expected, got boolean)")
  end)

  it("makes zeros, ones and full from a table or sizes", function()
    assert.are.same({{0, 0, 0}, {0, 0, 0}}, ms.zeros{2, 3}:totable())
    assert.are.same({{0, 0, 0}, {0, 0, 0}}, ms.zeros(2, 3):totable())
    assert.are.same({1, 1}, ms.ones(2):totable())
    assert.are.same({{7, 7}}, ms.full({1, 2}, 7):totable())
    assert.are.same({}, ms.zeros():shape())
    assert.are.equal(0, ms.zeros(3, 0):numel())
  end)

  it("makes identity and diagonal matrices", function()
    assert.are.same({{1, 0, 0}, {0, 1, 0}, {0, 0, 1}}, ms.eye(3):totable())
    assert.are.same({{1, 0, 0}, {0, 1, 0}}, ms.eye(2, 3):totable())
    assert.are.same({{2, 0}, {0, 5}}, ms.diag(ms.tensor{2, 5}):totable())
    assert.are.same({1, 5}, ms.tensor{{1, 2, 3}, {4, 5, 6}}:diag():totable())
  end)

  it("makes ranges", function()
    assert.are.same({0, 1, 2, 3}, ms.arange(4):totable())
    assert.are.same({2, 3, 4}, ms.arange(2, 5):totable())
    assert.are.same({5, 3, 1}, ms.arange(5, 0, -2):totable())
    assert.are.same({0, 0.25, 0.5, 0.75}, ms.arange(0, 1, 0.25):totable())
    assert.are.same({}, ms.arange(3, 1):totable())
    assert.are.same({0, 0.25, 0.5, 0.75, 1}, ms.linspace(0, 1, 5):totable())
    assert.are.same({3}, ms.linspace(3, 9, 1):totable())
    local l = ms.linspace(-1, 0.3, 7):totable()
    assert.are.equal(-1, l[1])
    assert.are.equal(0.3, l[7]) -- the last point is exactly the endpoint
  end)

  it("draws uniform numbers in [lo, hi)", function()
    local t = ms.rand({1000}, {seed = 3, lo = -2, hi = 5}):totable()
    local lo, hi = math.huge, -math.huge
    for _, v in ipairs(t) do lo, hi = math.min(lo, v), math.max(hi, v) end
    assert.is_true(lo >= -2 and hi < 5)
    assert.is_true(lo < -1.9 and hi > 4.9) -- 1000 draws cover the interval
  end)

  it("reproduces seeded randn and differs across seeds", function()
    local a = ms.randn({50}, {seed = 42}):totable()
    local b = ms.randn({50}, {seed = 42}):totable()
    local c = ms.randn({50}, {seed = 43}):totable()
    assert.are.same(a, b)
    local differ = 0
    for i = 1, 50 do if a[i] ~= c[i] then differ = differ + 1 end end
    assert.are.equal(50, differ)
  end)

  it("reproduces the context generator after ms.seed", function()
    ms.seed(7)
    local a = ms.randn{20}:totable()
    local a2 = ms.rand{5}:totable()
    ms.seed(7)
    assert.are.same(a, ms.randn{20}:totable())
    assert.are.same(a2, ms.rand{5}:totable())
    ms.seed(8)
    assert.are_not.same(a, ms.randn{20}:totable())
  end)

  it("gives randn the requested mean and std", function()
    assert.are.same({3, 3, 3}, ms.randn({3}, {mean = 3, std = 0}):totable())
    local t = ms.randn({20000}, {seed = 1, mean = 2, std = 0.5}):totable()
    local s, s2 = 0, 0
    for _, v in ipairs(t) do s = s + v end
    local mean = s / #t
    for _, v in ipairs(t) do s2 = s2 + (v - mean) ^ 2 end
    local std = math.sqrt(s2 / (#t - 1))
    -- standard errors: 0.5/sqrt(20000) = 0.0035 for the mean, about 0.0025 for the std
    assert.is_true(close(mean, 2, 0.02), "mean " .. mean)
    assert.is_true(close(std, 0.5, 0.02), "std " .. std)
  end)

  it("concatenates along a dimension", function()
    local a, b = ms.tensor{{1, 2}}, ms.tensor{{3, 4}, {5, 6}}
    assert.are.same({{1, 2}, {3, 4}, {5, 6}}, ms.cat{a, b}:totable())
    assert.are.same({{1, 2, 3, 4}}, ms.cat({a, ms.tensor{{3, 4}}}, 2):totable())
    assert.are.same({{1, 3, 4}}, ms.cat({ms.tensor{{1}}, ms.tensor{{3, 4}}}, -1):totable())
    assert.are.same({0, 0, 1, 1, 1}, ms.cat{ms.zeros(2), ms.ones(3)}:totable())
  end)
end)

describe("inspection", function()
  local t = ms.zeros(2, 3, 4)
  it("reports shape, size, numel, ndim", function()
    assert.are.same({2, 3, 4}, t:shape())
    assert.are.same({2, 3, 4}, t:size())
    assert.are.equal(3, t:size(2))
    assert.are.equal(4, t:size(-1))
    assert.are.equal(2, t:size(-3))
    assert.are.equal(24, t:numel())
    assert.are.equal(3, t:ndim())
    assert.are.equal(2, #t)
    assert.is_true(t:is_contiguous())
  end)

  it("bumps the version on in-place writes only", function()
    local v = ms.zeros(3)
    local v0 = v:version()
    local _ = v + 1
    assert.are.equal(v0, v:version())
    v[1] = 1
    assert.is_true(v:version() > v0)
    local v1 = v:version()
    v:fill(2)
    assert.is_true(v:version() > v1)
    local v2 = v:version()
    v:assign(ms.ones(3))
    assert.is_true(v:version() > v2)
  end)

  it("gives item of one-element tensors of any rank", function()
    assert.are.equal(4, ms.full({1, 1, 1}, 4):item())
    assert.has_error(function() ms.zeros(2):item() end,
      "item: expected a tensor with one element, got shape [2]")
  end)
end)

describe("views", function()
  it("share storage through transpose in both directions", function()
    local t = ms.tensor{{1, 2, 3}, {4, 5, 6}}
    local tt = t:t()
    assert.is_true(t:shares_storage(tt))
    assert.is_false(tt:is_contiguous())
    assert.are.same({3, 2}, tt:shape())
    assert.are.same({{1, 4}, {2, 5}, {3, 6}}, tt:totable())
    tt[{3, 1}] = 30
    assert.are.equal(30, t[{1, 3}])
    t[{2, 1}] = 40
    assert.are.equal(40, tt[{1, 2}])
  end)

  it("transposes chosen dimensions", function()
    local t = ms.arange(24):view(2, 3, 4)
    local u = t:transpose(1, 3)
    assert.are.same({4, 3, 2}, u:shape())
    assert.are.equal(t[{2, 3, 4}], u[{4, 3, 2}])
    assert.are.equal(t[{1, 2, 3}], u[{3, 2, 1}])
  end)

  it("view shares storage and refuses non-contiguous input", function()
    local t = ms.arange(6)
    local v = t:view(2, 3)
    assert.is_true(v:shares_storage(t))
    v[{2, 1}] = 100
    assert.are.equal(100, t[4])
    assert.are.same({3, 2}, t:view{-1, 2}:shape())
    assert.has_error(function() v:t():view(6) end,
      "view: tensor of shape [3,2] is not contiguous (use reshape, which copies)")
  end)

  it("reshape of a transposed tensor copies in row-major order", function()
    local t = ms.tensor{{1, 2, 3}, {4, 5, 6}}
    local r = t:t():reshape(6)
    assert.is_false(r:shares_storage(t))
    assert.are.same({1, 4, 2, 5, 3, 6}, r:totable())
    r[1] = 99
    assert.are.equal(1, t[{1, 1}])
    local f = t:t():flatten()
    assert.are.same({1, 4, 2, 5, 3, 6}, f:totable())
    -- a contiguous tensor reshapes into a view
    assert.is_true(t:reshape{3, 2}:shares_storage(t))
  end)

  it("slices with 1-based inclusive bounds, negatives and steps", function()
    local t = ms.arange(10)
    assert.are.same({2, 3, 4}, t:slice(1, 3, 5):totable())
    assert.are.same({7, 8, 9}, t:slice(1, -3):totable())
    assert.are.same({0, 3, 6, 9}, t:slice(1, 1, 10, 3):totable())
    assert.are.same({}, t:slice(1, 11):totable())
    local s = t:slice(1, 2, 4)
    assert.is_true(s:shares_storage(t))
    s:fill(-1)
    assert.are.same({0, -1, -1, -1, 4}, t:slice(1, 1, 5):totable())
    local m = ms.tensor{{1, 2, 3}, {4, 5, 6}}
    assert.are.same({{2, 3}, {5, 6}}, m:slice(2, 2):totable())
  end)

  it("selects a row or column as a view", function()
    local m = ms.tensor{{1, 2, 3}, {4, 5, 6}}
    assert.are.same({4, 5, 6}, m:select(1, 2):totable())
    assert.are.same({3, 6}, m:select(2, -1):totable())
    m:select(2, 1):fill(0)
    assert.are.same({{0, 2, 3}, {0, 5, 6}}, m:totable())
  end)

  it("expands size-1 dimensions without copying", function()
    local c = ms.tensor{{1}, {2}}
    local e = c:expand{2, 3}
    assert.is_true(e:shares_storage(c))
    assert.are.same({{1, 1, 1}, {2, 2, 2}}, e:totable())
    assert.are.same({{{5, 6}}, {{5, 6}}}, ms.tensor{5, 6}:expand(2, 1, 2):totable())
  end)

  it("permutes dimensions", function()
    local t = ms.arange(24):view(2, 3, 4)
    local p = t:permute{3, 1, 2}
    assert.are.same({4, 2, 3}, p:shape())
    assert.is_true(p:shares_storage(t))
    for i = 1, 2 do for j = 1, 3 do for k = 1, 4 do
      assert.are.equal(t[{i, j, k}], p[{k, i, j}])
    end end end
    assert.are.same({4, 2, 3}, t:permute{-1, 1, 2}:shape())
  end)

  it("contiguous returns the same storage only when already contiguous", function()
    local t = ms.tensor{{1, 2}, {3, 4}}
    assert.is_true(t:contiguous():shares_storage(t))
    local c = t:t():contiguous()
    assert.is_false(c:shares_storage(t))
    assert.is_true(c:is_contiguous())
    assert.are.same({{1, 3}, {2, 4}}, c:totable())
    assert.is_false(t:clone():shares_storage(t))
  end)

  it("keeps storage alive after the base is released", function()
    local v
    do
      local base <close> = ms.tensor{1, 2, 3}
      v = base:slice(1, 2)
    end
    assert.are.same({2, 3}, v:totable())
  end)
end)

describe("indexing", function()
  it("reads elements and sub-tensors with 1-based and negative indices", function()
    local m = ms.tensor{{1, 2, 3}, {4, 5, 6}}
    assert.are.equal(2, m[{1, 2}])
    assert.are.equal(6, m[{-1, -1}])
    assert.are.equal(1, m[{-2, 1}])
    local row = m[2]
    assert.are.same({4, 5, 6}, row:totable())
    assert.is_true(row:shares_storage(m))
    assert.are.equal(5, m[2][2])
    assert.are.equal(3, ms.tensor{1, 2, 3}[3])
    assert.are.same({{1, 2, 3}, {4, 5, 6}}, m[{}]:totable())
  end)

  it("writes numbers and tensors", function()
    local m = ms.zeros(2, 3)
    m[{1, 2}] = 5
    m[2] = 7
    assert.are.same({{0, 5, 0}, {7, 7, 7}}, m:totable())
    m[1] = ms.tensor{1, 2, 3}
    m[{2, 3}] = ms.tensor(9)
    assert.are.same({{1, 2, 3}, {7, 7, 9}}, m:totable())
    m[2] = ms.tensor{4} -- broadcasts
    assert.are.same({4, 4, 4}, m[2]:totable())
    m[-1] = -1
    assert.are.same({-1, -1, -1}, m[2]:totable())
  end)

  it("rejects out-of-range and malformed indices", function()
    local m = ms.zeros(2, 3)
    assert.has_error(function() return m[3] end, "index: 3 out of range for dimension 1 of size 2")
    assert.has_error(function() return m[{1, 4}] end, "index: 4 out of range for dimension 2 of size 3")
    assert.has_error(function() return m[{1, -4}] end, "index: -4 out of range for dimension 2 of size 3")
    assert.has_error(function() return m[{1, 1, 1}] end, "index: 3 indices for a 2-d tensor")
    assert.has_error(function() return m[1.5] end, "index: expected an integer, got 1.5")
    assert.has_error(function() return m[{1, "a"}] end, "index: entry 2 must be an integer, got string")
    assert.has_error(function() return m[true] end,
      "index: expected an integer, a table of integers or a method name, got boolean")
    assert.has_error(function() return ms.tensor(1)[1] end, "index: cannot index a 0-d tensor (use :item())")
    assert.has_error(function() m[0] = 1 end, "index: 0 out of range for dimension 1 of size 2")
    assert.has_error(function() m.x = 1 end, "index: expected an integer or a table of integers, got string")
    assert.has_error(function() m[1] = "a" end, "index assignment: expected a number or a tensor, got string")
    assert.has_error(function() m[1] = ms.zeros(2) end,
      "index assignment: cannot broadcast source of shape [2] to destination of shape [3]")
    assert.has_error(function() m[{1, 1}] = ms.zeros(2) end,
      "index assignment: one element needs a number or a one-element tensor, got shape [2]")
  end)

  it("returns nil for unknown method names", function()
    assert.is_nil(ms.zeros(1).no_such_method)
  end)
end)

describe("fill and assign", function()
  it("work in place and return self", function()
    local t = ms.zeros(2, 2)
    assert.are.equal(t, t:fill(3))
    assert.are.same({{3, 3}, {3, 3}}, t:totable())
    assert.are.equal(t, t:assign(ms.tensor{1, 2}))
    assert.are.same({{1, 2}, {1, 2}}, t:totable())
    -- assigning a tensor's own transpose reads everything first
    local m = ms.tensor{{1, 2}, {3, 4}}
    m:assign(m:t())
    assert.are.same({{1, 3}, {2, 4}}, m:totable())
  end)
end)

describe("totable", function()
  it("round-trips random 3-d data exactly", function()
    math.randomseed(11)
    local data = lua_random{3, 4, 5}
    local t = ms.tensor(data)
    assert.are.same(data, t:totable())
    assert.are.same(data, ms.tensor(t:totable()):totable())
  end)

  it("returns a number for 0-d and empty tables for empty tensors", function()
    assert.are.equal(1.5, ms.tensor(1.5):totable())
    assert.are.same({}, ms.zeros(0):totable())
    assert.are.same({{}, {}}, ms.zeros(2, 0):totable())
  end)

  it("reads strided views in logical order", function()
    local t = ms.arange(12):view(3, 4)
    assert.are.same({{1, 5, 9}, {3, 7, 11}}, t:t():slice(1, 2, 4, 2):totable())
  end)
end)

describe("tostring", function()
  it("formats small integral, fractional and scientific data", function()
    assert.are.equal("[[1., 2.],\n [3., 4.]]", tostring(ms.tensor{{1, 2}, {3, 4}}))
    assert.are.equal("[[ 1., -2.],\n [nan, inf]]", tostring(ms.tensor{{1, -2}, {0 / 0, math.huge}}))
    assert.are.equal("[0.5000, 0.2500]", tostring(ms.tensor{0.5, 0.25}))
    assert.are.equal("[1.0000e-05, 1.0000e+00]", tostring(ms.tensor{1e-5, 1}))
    assert.are.equal("3.", tostring(ms.tensor(3)))
    assert.are.equal("[]", tostring(ms.zeros(0)))
    assert.are.equal("[[[0., 1.],\n  [2., 3.]],\n\n [[4., 5.],\n  [6., 7.]]]", tostring(ms.arange(8):view(2, 2, 2)))
    assert.are.equal(tostring(ms.tensor{1, 2}), ms.tensor{1, 2}:tostring())
  end)

  it("elides the middle of large tensors with ...", function()
    assert.are.equal("[   0.,    1.,    2., ..., 1997., 1998., 1999.]", tostring(ms.arange(2000)))
    local row = "[0., 0., 0., ..., 0., 0., 0.]"
    local expected = "[" .. row .. ",\n " .. row .. ",\n " .. row .. ",\n ...,\n "
      .. row .. ",\n " .. row .. ",\n " .. row .. "]"
    assert.are.equal(expected, tostring(ms.zeros(100, 100)))
  end)

  it("takes a threshold and an edge count", function()
    assert.are.equal("[0., 1., ..., 8., 9.]", ms.arange(10):tostring(5, 2))
    assert.are.equal("[0., 1., 2., 3., 4., 5., 6., 7., 8., 9.]", ms.arange(10):tostring(10, 2))
  end)

  it("wraps long rows at 75 columns", function()
    local s = tostring(ms.arange(30))
    for line in s:gmatch("[^\n]+") do assert.is_true(#line <= 75, line) end
    assert.is_truthy(s:find("\n", 1, true))
  end)
end)

describe("released tensors", function()
  local released = h.released

  it("raise 'tensor has been released' when used", function()
    local x = released()
    local msg = "tensor has been released"
    local uses = {
      function() return x:sum() end,
      function() return x:shape() end,
      function() return ms.sum(x) end,
      function() return ms.Tensor.numel(x) end,
      function() return ms.add(x, 1) end,
      function() return x + 1 end,
      function() return 1 - x end,
      function() return -x end,
      function() return #x end,
      function() return x < 1 end,
      function() return x[1] end,
      function() x[1] = 1 end,
      function() local t = ms.zeros(2); t[1] = x end,
      function() return ms.exp(x) end,
      function() return ms.where(x, 1, 2) end,
      function() return ms.matmul(x, x) end,
      function() return ms.tensor(x) end,
      function() return ms.cat{ms.zeros(2), x} end,
      function() return ms.zeros(2):assign(x) end,
      function() return ms.eigh(x) end,
    }
    for i, f in ipairs(uses) do
      local ok, err = pcall(f)
      assert.is_false(ok, "use " .. i)
      assert.is_truthy(tostring(err):find(msg, 1, true), "use " .. i .. ": " .. tostring(err))
    end
  end)

  it("print as released and can be closed twice", function()
    local x = released()
    assert.are.equal("tensor (released)", tostring(x))
    getmetatable(x).__close(x)
    assert.are.equal("tensor (released)", tostring(x))
  end)
end)

describe("memory", function()
  after_each(function() ms.set_memory_limit(0) end)

  it("counts live bytes and enforces a budget", function()
    collectgarbage()
    local before = ms.memory()
    local t = ms.zeros(1000)
    local bytes, limit = ms.memory()
    assert.is_true(bytes >= before + 8000)
    assert.are.equal(0, limit)
    ms.set_memory_limit(bytes + 100)
    local _, l2 = ms.memory()
    assert.are.equal(bytes + 100, l2)
    local ok, err = pcall(ms.zeros, 1000)
    assert.is_false(ok)
    assert.is_truthy(err:find("out of memory", 1, true))
    ms.set_memory_limit(0)
    assert.are.equal(1000, ms.zeros(1000):numel())
    assert.are.equal(1000, t:numel())
  end)
end)
