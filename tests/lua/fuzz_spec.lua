-- No input reachable from Lua may crash the process. Every function of the module and
-- every Tensor method is called with odd arguments inside pcall; the only assertion is
-- that pcall returns (true, or false with a string message). A crash (segfault, abort,
-- sanitizer report) fails the ctest entry. The hostile-callback cases at the end are
-- regressions for use-after-free and overflow bugs found this way.
--
-- Set METASTEP_FUZZ_TRACE=1 to print each call before it is made (to find a crasher).
local ms = require "metastep"

local TRACE = os.getenv("METASTEP_FUZZ_TRACE")
local BUDGET = 256 << 20 -- engine bytes; huge sizes then fail fast instead of swapping

local nan = 0 / 0

-- Odd values, as factories so every call gets fresh tensors (calls mutate and close them).
local function released()
  local x
  do
    local y <close> = ms.zeros(2)
    x = y
  end
  return x
end

local proxy_mt = {
  __len = function() return 2 end,
  __index = function(_, i) return i end,
}

local values = {
  {"nil", function() return nil end},
  {"false", function() return false end},
  {"true", function() return true end},
  {"0", function() return 0 end},
  {"1", function() return 1 end},
  {"2", function() return 2 end},
  {"-1", function() return -1 end},
  {"-3", function() return -3 end},
  {"2.5", function() return 2.5 end},
  {"-0.0", function() return -0.0 end},
  {"1e300", function() return 1e300 end},
  {"-1e300", function() return -1e300 end},
  {"inf", function() return math.huge end},
  {"-inf", function() return -math.huge end},
  {"nan", function() return nan end},
  {"maxinteger", function() return math.maxinteger end},
  {"mininteger", function() return math.mininteger end},
  {"2^40", function() return 1 << 40 end},
  {"2^53", function() return 2 ^ 53 end},
  {"'x'", function() return "x" end},
  {"'3'", function() return "3" end},
  {"''", function() return "" end},
  {"{}", function() return {} end},
  {"{1,2}", function() return {1, 2} end},
  {"{{1,2},{3,4}}", function() return {{1, 2}, {3, 4}} end},
  {"ragged", function() return {{1}, {2, 3}} end},
  {"{-1}", function() return {-1} end},
  {"{1.5}", function() return {1.5} end},
  {"{'a'}", function() return {"a"} end},
  {"{2,0}", function() return {2, 0} end},
  {"{1,1,1,1,1,1,1,1,1}", function() return {1, 1, 1, 1, 1, 1, 1, 1, 1} end},
  {"{2^40,2^40}", function() return {1 << 40, 1 << 40} end},
  {"options", function() return {seed = 1, lo = 2, hi = 1, mean = nan, std = -1} end},
  {"{seed='x'}", function() return {seed = "x"} end},
  {"{tensors}", function() return {ms.zeros(2), ms.ones(3)} end},
  {"proxy", function() return setmetatable({}, proxy_mt) end},
  {"function", function() return function(...) return ... end end},
  {"coroutine", function() return coroutine.create(print) end},
  {"userdata", function() return io.stdout end},
  {"Tensor table", function() return ms.Tensor end},
  {"tensor metatable", function() return getmetatable(ms.zeros(1)) end},
  {"0-d", function() return ms.tensor(3) end},
  {"empty [0]", function() return ms.zeros(0) end},
  {"empty [0,3]", function() return ms.zeros(0, 3) end},
  {"empty [3,0]", function() return ms.zeros(3, 0) end},
  {"[1]", function() return ms.tensor{7} end},
  {"[2]", function() return ms.tensor{1, -2} end},
  {"[3]", function() return ms.tensor{0.5, 0, 2} end},
  {"[3,1]", function() return ms.tensor{{1}, {2}, {3}} end},
  {"[2,3]", function() return ms.tensor{{1, 2, 3}, {4, 5, 6}} end},
  {"[3,3]", function() return ms.tensor{{4, 1, 0}, {1, 3, 1}, {0, 1, 2}} end},
  {"singular [2,2]", function() return ms.tensor{{1, 2}, {2, 4}} end},
  {"[2,3,4]", function() return ms.arange(24):view(2, 3, 4) end},
  {"8-d", function() return ms.ones(1, 1, 1, 1, 1, 1, 1, 2) end},
  {"transposed", function() return ms.tensor{{1, 2, 3}, {4, 5, 6}}:t() end},
  {"expanded", function() return ms.tensor{{1, 2, 3}}:expand{4, 3} end},
  {"stepped slice", function() return ms.arange(10):slice(1, 1, 10, 3) end},
  {"non-finite", function() return ms.tensor{{nan, 1}, {math.huge, -math.huge}} end},
  {"released", released},
}

local function label(args)
  local parts = {}
  for i = 1, args.n do parts[i] = values[args[i]][1] end
  return table.concat(parts, ", ")
end

-- Calls f with values[i1], values[i2], ... fresh; records any failure that is not a string.
local problems = {}
local calls = 0

local function try(name, f, idx)
  local args = {n = #idx}
  for i, k in ipairs(idx) do args[i] = values[k][2]() end
  idx.n = #idx
  if TRACE then io.stderr:write(name, "(", label(idx), ")\n") end
  calls = calls + 1
  local ok, err = pcall(f, table.unpack(args, 1, args.n))
  if not ok and type(err) ~= "string" then
    problems[#problems + 1] = ("%s(%s): non-string error %s"):format(name, label(idx), tostring(err))
  end
  -- a fuzzed set_memory_limit must not lift the budget for the following calls
  ms.set_memory_limit(BUDGET)
end

-- The crash surface is C: every C function is fuzzed, and of the Lua functions only
-- the front library's own (Lua compositions elsewhere, such as autodiff transforms or
-- optimizers, may legitimately loop for a count like math.maxinteger).
local front = {allclose = true, is_tensor = true, help_text = true}

local function sorted_functions(t, skip)
  local names = {}
  for k, v in pairs(t) do
    if type(v) == "function" and not skip[k] and (front[k] or debug.getinfo(v, "S").what == "C") then
      names[#names + 1] = k
    end
  end
  table.sort(names)
  return names
end

local skip = {}

describe("fuzz", function()
  setup(function()
    ms.set_memory_limit(BUDGET)
    math.randomseed(1234)
  end)
  teardown(function() ms.set_memory_limit(0) end)
  after_each(function()
    assert.are.same({}, problems)
    problems = {}
  end)

  local nv = #values

  for _, name in ipairs(sorted_functions(ms, skip)) do
    it("ms." .. name .. " with 0, 1, 2 and some 3 odd arguments", function()
      local f = ms[name]
      try(name, f, {})
      for a = 1, nv do try(name, f, {a}) end
      for a = 1, nv do for b = 1, nv do try(name, f, {a, b}) end end
      for _ = 1, 150 do
        try(name, f, {math.random(nv), math.random(nv), math.random(nv)})
      end
    end)
  end

  for _, sub in ipairs{"linalg"} do
    for _, name in ipairs(sorted_functions(ms[sub], skip)) do
      it("ms." .. sub .. "." .. name .. " with 1 and 2 odd arguments", function()
        local f = ms[sub][name]
        for a = 1, nv do try(sub .. "." .. name, f, {a}) end
        for a = 1, nv do for b = 1, nv do try(sub .. "." .. name, f, {a, b}) end end
      end)
    end
  end

  -- Receivers: every tensor value (index in values) and a few non-tensors as self.
  local receivers = {}
  for i, v in ipairs(values) do
    if v[1] == "0-d" then for j = i, nv do receivers[#receivers + 1] = j end end
  end
  for _, k in ipairs{1, 4, 20, 23} do receivers[#receivers + 1] = k end

  for _, name in ipairs(sorted_functions(ms.Tensor, skip)) do
    it("Tensor:" .. name .. " on odd receivers with odd arguments", function()
      local m = ms.Tensor[name]
      for _, r in ipairs(receivers) do
        try(":" .. name, m, {r})
        for a = 1, nv do try(":" .. name, m, {r, a}) end
        for _ = 1, 30 do try(":" .. name, m, {r, math.random(nv), math.random(nv)}) end
        for _ = 1, 10 do try(":" .. name, m, {r, math.random(nv), math.random(nv), math.random(nv)}) end
      end
    end)
  end

  -- Operators and metamethods, through the syntax that triggers them.
  local syntax = {
    add = function(a, b) return a + b end,
    sub = function(a, b) return a - b end,
    mul = function(a, b) return a * b end,
    div = function(a, b) return a / b end,
    pow = function(a, b) return a ^ b end,
    lt = function(a, b) return a < b end,
    le = function(a, b) return a <= b end,
    unm = function(a) return -a end,
    len = function(a) return #a end,
    tostring = function(a) return tostring(a) end,
    index = function(a, k) return a[k] end,
    newindex = function(a, k, v) a[k] = v end,
    close = function(a) local _ <close> = a end,
    concat = function(a, b) return a .. b end,
    call = function(a, b) return a(b) end,
    eq = function(a, b) return a == b end,
  }
  local syntax_names = {}
  for k in pairs(syntax) do syntax_names[#syntax_names + 1] = k end
  table.sort(syntax_names)

  for _, name in ipairs(syntax_names) do
    it("operator " .. name .. " with tensors on either side", function()
      local f = syntax[name]
      for _, r in ipairs(receivers) do
        try(name, f, {r})
        for a = 1, nv do
          try(name, f, {r, a})
          try(name, f, {a, r})
        end
        for _ = 1, 30 do try(name, f, {r, math.random(nv), math.random(nv)}) end
      end
    end)
  end

  it("metatable entries called directly with odd arguments", function()
    local mt = getmetatable(ms.zeros(1))
    for _, event in ipairs(sorted_functions(mt, {})) do
      for a = 1, nv do
        try("mt." .. event, mt[event], {a})
        for b = 1, nv do try("mt." .. event, mt[event], {a, b}) end
      end
    end
  end)

  it("made many calls", function()
    assert.is_true(calls > 100000, "only " .. calls .. " calls")
  end)
end)

describe("hostile callbacks", function()
  -- Each case ran Lua code (a metamethod or a finalizer) that released or collected a
  -- tensor while a binding held its pointer, or lied about a table's length.
  it("cat over a proxy whose __index collects garbage", function()
    local proxy = setmetatable({}, {
      __len = function() return 3 end,
      __index = function(_, i) collectgarbage() collectgarbage() return ms.ones(2) * i end,
    })
    assert.are.same({1, 1, 2, 2, 3, 3}, ms.cat(proxy, 1):totable())
  end)

  it("cat over a proxy whose __index closes an earlier element", function()
    local first = ms.ones(2)
    local proxy = setmetatable({}, {
      __len = function() return 2 end,
      __index = function(_, i)
        if i == 2 then getmetatable(first).__close(first) return ms.zeros(2) end
        return first
      end,
    })
    assert.has_error(function() ms.cat(proxy) end, "bad argument #1 to 'cat' (element 1: tensor has been released)")
  end)

  it("tensor from a proxy whose __len makes the element count overflow", function()
    local row = setmetatable({}, {__len = function() return 4 end, __index = function() return 1 end})
    local outer = setmetatable({}, {__len = function() return (1 << 62) + 1 end, __index = function() return row end})
    assert.has_error(function() ms.tensor(outer) end, "tensor: nested table has more than 2^50 elements")
  end)

  it("tensor from a proxy whose __len changes between calls", function()
    local n = 0
    local t = setmetatable({}, {__len = function() n = n + 1 return n end, __index = function() return 1 end})
    local ok, err = pcall(ms.tensor, t)
    assert.is_false(ok)
    assert.is_truthy(err:find("ragged nested table", 1, true))
  end)

  it("indexing with a key table whose __index closes the tensor", function()
    local t = ms.zeros(3, 3)
    local key = setmetatable({}, {
      __len = function() return 2 end,
      __index = function() getmetatable(t).__close(t) return 1 end,
    })
    -- key tables are read raw: the proxy is an empty index, i.e. the whole tensor
    assert.are.same({3, 3}, t[key]:shape())
  end)

  it("expand and reshape with a shape proxy that closes the tensor", function()
    for _, method in ipairs{"expand", "reshape", "view"} do
      local t = ms.zeros(1, 3)
      local shape = setmetatable({}, {
        __len = function() return 2 end,
        __index = function(_, i) getmetatable(t).__close(t) return i == 1 and 1 or 3 end,
      })
      local ok, err = pcall(t[method], t, shape)
      assert.is_false(ok, method)
      assert.is_truthy(err:find("tensor has been released", 1, true), err)
    end
  end)

  it("finalizers that close operands while bindings allocate", function()
    for _ = 1, 3000 do
      local t = ms.ones(8)
      setmetatable({}, {__gc = function() getmetatable(t).__close(t) end})
      for _, f in ipairs{ms.add, ms.exp, ms.sum, ms.where, ms.matmul, ms.clone, ms.eigh} do
        local ok, err = pcall(f, t, t, t)
        assert.is_true(ok or type(err) == "string")
      end
    end
  end)

  it("a __gc that raises does not disturb a binding", function()
    for _ = 1, 200 do setmetatable({}, {__gc = function() error("boom") end}) end
    local t = ms.ones(1000)
    for _ = 1, 100 do t = t + 1 end
    assert.are.equal(101, t[1])
  end)
end)
