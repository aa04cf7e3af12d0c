-- No input reachable from Lua may crash the process. Every function of the module and
-- every Tensor method is called with odd arguments inside pcall; the only assertion is
-- that pcall returns (true, or false with a string message). A crash (segfault, abort,
-- sanitizer report) fails the ctest entry. The hostile-callback cases at the end are
-- regressions for use-after-free and overflow bugs found this way: metamethods, finalizers
-- (fired at a chosen allocation by `armed`) and custom rules that close tensors, release
-- primitives and objectives, or push, pop and free levels while a binding is running; and
-- every method of a released level, custom primitive and objective.
--
-- Set METASTEP_FUZZ_TRACE=1 to print each call before it is made (to find a crasher).
local ms = require "metastep"
local h = dofile((debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "tests/lua") .. "/helpers.lua")

local TRACE = os.getenv("METASTEP_FUZZ_TRACE")
local BUDGET = 256 << 20 -- engine bytes; huge sizes then fail fast instead of swapping

local nan = 0 / 0

-- Odd values, as factories so every call gets fresh tensors (calls mutate and close them).
local released = h.released

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
  -- a fuzzed set_memory_limit must not lift the budget for the following calls, nor a fuzzed
  -- set_check_numerics change how they behave
  ms.set_memory_limit(BUDGET)
  ms.set_check_numerics(false)
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

-- ms.save writes the file its first argument names (odd values would litter the working
-- directory with files "x", "1", ...): archive_spec fuzzes it into a scratch file instead.
local skip = {save = true}

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

describe("hostile callbacks in the autodiff, meta and objective bindings", function()
  -- The same rule as above for lms_autodiff.c, lms_meta.c and lms_objective.c: a binding
  -- reads a tensor's pointer only after its last allocation and its last call into Lua, and
  -- an engine call that runs Lua rules keeps what it passes alive. Each case below crashed
  -- (use-after-free under ASan) before the bindings kept that rule.
  local core = require "metastep.core"

  local function close(x) getmetatable(x).__close(x) end

  -- Asserts that f(...) raises "bad argument #n to '<any name>' (msg)".
  local function assert_argerror(n, msg, f, ...)
    local ok, err = pcall(f, ...)
    assert.is_false(ok, "expected an error")
    local prefix, rest = err:match("^(bad argument #%d+ to '[^']*' )(.*)$")
    assert.are.equal(("bad argument #%d"):format(n), prefix and prefix:match("^bad argument #%d+"), err)
    assert.are.equal("(" .. msg .. ")", rest, err)
  end

  local function assert_error_has(text, f, ...)
    local ok, err = pcall(f, ...)
    assert.is_false(ok, "expected an error")
    assert.is_truthy(tostring(err):find(text, 1, true), err)
  end

  -- Calls f(...) with finalizers pending that close victim at the first allocation f makes
  -- (deterministically: the collector is driven, with the smallest step size, into the
  -- phase that calls finalizers, and the first batch has just run). A binding that reads
  -- the victim's pointer before allocating then uses freed memory; one that keeps the rule
  -- raises "tensor has been released".
  local target
  local function armed(victim, f, ...)
    collectgarbage()
    local mode = collectgarbage("incremental", 100, 100, 1)
    local fired = 0
    for _ = 1, 100 do
      setmetatable({}, {__gc = function()
        fired = fired + 1
        if target then close(target) end
      end})
    end
    local spins = 0
    while fired == 0 and spins < 1e6 do
      local _ = {}
      spins = spins + 1
    end
    target = victim
    local res = table.pack(pcall(f, ...))
    target = nil
    collectgarbage("incremental", 200, 100, 13) -- Lua's defaults
    collectgarbage(mode)
    collectgarbage()
    return table.unpack(res, 1, res.n)
  end

  local function assert_released(ok, err)
    assert.is_false(ok, "expected an error")
    assert.is_truthy(err:find("(tensor has been released)", 1, true), err)
  end

  it("level:watch, level:tangent and level:gradient with a finalizer that closes a tensor", function()
    local tape <close> = core.ad_push("reverse")
    local fwd <close> = core.ad_push("forward")
    local x, t = ms.ones(8), ms.ones(8)
    assert_released(armed(t, function() return tape:watch(t) end))
    t = ms.ones(8)
    assert_released(armed(t, function() return fwd:watch(x, t) end)) -- the tangent
    t = ms.ones(8)
    assert_released(armed(t, function() return fwd:tangent(t) end))
    fwd:pop()
    tape:pop()
    local y, xs = ms.tensor(1), {x}
    assert_released(armed(y, function() return tape:gradient(y, xs) end))
  end)

  it("stop_gradient, log_softmax and softmax_xent with a finalizer that closes an operand", function()
    local t = ms.ones(8)
    assert_released(armed(t, core.stop_gradient, t))
    t = ms.ones(8)
    assert_released(armed(t, core.log_softmax, t))
    local logits, labels = ms.ones(4, 2), ms.ones(4)
    assert_released(armed(logits, core.softmax_xent, logits, labels))
    logits = ms.ones(4, 2)
    assert_released(armed(labels, core.softmax_xent, logits, labels))
  end)

  it("sum_to with a shape proxy that closes the tensor", function()
    local t = ms.ones(2, 3)
    local shape = setmetatable({}, {
      __len = function() return 1 end,
      __index = function() close(t) return 3 end,
    })
    assert_argerror(1, "tensor has been released", core.sum_to, t, shape)
  end)

  it("level:gradient over a proxy of xs whose __len or __index closes y, the seed or an x", function()
    -- y, the seed and the extra x are not on the tape: closing their box frees them
    local tape = core.ad_push("reverse")
    local x = tape:watch(ms.tensor{1, 2, 3})
    tape:pop()
    local y = ms.tensor(5)
    local xs = setmetatable({}, {__len = function() close(y) return 1 end, __index = function() return x end})
    assert_argerror(2, "tensor has been released", tape.gradient, tape, y, xs)
    y = ms.tensor(5)
    xs = setmetatable({}, {__len = function() return 1 end, __index = function() close(y) return x end})
    assert_argerror(2, "tensor has been released", tape.gradient, tape, y, xs)
    y = ms.tensor(5)
    local other = ms.ones(2)
    xs = setmetatable({}, {__len = function() return 2 end,
      __index = function(_, i) if i == 2 then close(other) return x end return other end})
    assert_argerror(3, "element 1: tensor has been released", tape.gradient, tape, y, xs)
    local seed = ms.tensor(1)
    xs = setmetatable({}, {__len = function() return 1 end, __index = function() close(seed) return x end})
    assert_argerror(4, "tensor has been released", tape.gradient, tape, y, xs, seed)
    xs = setmetatable({}, {__len = function() return 1 end, __index = function() tape:free() return x end})
    assert_argerror(1, "level has been freed", tape.gradient, tape, y, xs)
  end)

  it("level:gradient whose custom vjp rule closes an x or frees the tape", function()
    local victim, tape
    local op = core.custom{name = "hostile", forward = function(a) return a * 2 end,
      vjp = function(g)
        if victim then close(victim) end
        tape:free()
        collectgarbage()
        return g * 2
      end}
    tape = core.ad_push("reverse")
    local x = tape:watch(ms.tensor{1, 2})
    local y = op(x):sum()
    tape:pop()
    victim = ms.ones(3) -- not on the tape: the caller's box is its only owner
    local g = tape:gradient(y, {x, victim})
    assert.are.same({2, 2}, g[1]:totable())
    assert.are.same({0, 0, 0}, g[2]:totable())
    assert_argerror(1, "level has been freed", tape.size, tape)
  end)

  it("custom primitives whose forward rule closes the inputs or releases the primitive", function()
    local tape <close> = core.ad_push("reverse")
    local w = tape:watch(ms.tensor{1, 1})
    local x
    local add = core.custom{name = "closer", nin = 2, forward = function(a, b)
      local r = a + b
      close(x) -- the caller's box
      close(a) -- and the rule's own: no Lua box holds x any more
      collectgarbage()
      return r
    end}
    x = ms.tensor{1, 2}
    assert.are.same({2, 3}, add(x, w):totable())
    local t = ms.ones(2)
    assert_released(armed(t, add, t, 1)) -- 1 becomes a box after t is checked

    local op
    op = core.custom{name = "selfgc", forward = function(a)
      getmetatable(op).__gc(op)
      collectgarbage()
      return a * 2
    end}
    assert.are.same({2, 2}, op(w):totable()) -- recorded on the tape, which keeps the op alive
    assert.are.equal("custom primitive has been released", select(2, pcall(op, w)))
    op = core.custom{name = "selfgc2", forward = function()
      getmetatable(op).__gc(op)
      collectgarbage()
      return "no tensor"
    end}
    assert.are.equal("selfgc2: forward must return a tensor (result 1), got string", select(2, pcall(op, w)))
  end)

  it("custom rules that push, pop or free levels while the engine hides them", function()
    -- A forward rule runs with every level hidden (when some are active), a jvp rule with
    -- the levels it is propagated through hidden: pushes and pops there would overwrite
    -- the engine's level stack, and frees are deferred until the primitive returns.
    local inner_grad = core.custom{name = "inner_grad", forward = function(a)
      return ms.grad(function(z) return (z * z):sum() end)(a)
    end}
    assert.are.same({2, 4}, inner_grad(ms.tensor{1, 2}):totable()) -- no level active: fine
    local tape = core.ad_push("reverse")
    local x = tape:watch(ms.tensor{1, 2})
    assert_error_has("ad_push: not allowed inside the forward or jvp rule", inner_grad, x)

    local victim
    local freer = core.custom{name = "freer", forward = function(a)
      if victim then close(victim) end
      collectgarbage()
      return a * 2
    end, vjp = function(g) return g * 2 end}
    victim = tape
    local y = freer(x) -- frees the active tape inside the rule: deferred, then popped
    assert.are.equal(0, core.ad_depth())
    assert_argerror(1, "level has been freed", tape.size, tape)
    assert.are.same({3, 6}, (x * 3):totable())
    assert.are.same({2, 4}, y:totable())
    victim = nil

    -- a level dropped while active, collected inside a forward rule
    local function leak() return core.ad_push("reverse"):watch(ms.tensor{1, 2}) end
    local x2 = leak()
    assert.are.same({2, 4}, freer(x2):totable())
    assert.are.same({3, 6}, (x2 * 3):totable())
    assert.are.equal(0, core.ad_depth())

    local outer
    local popper = core.custom{name = "popper", forward = function(a) return a * 2 end,
      jvp = function(t) outer:pop() return t * 2 end}
    outer = core.ad_push("reverse")
    local inner = core.ad_push("forward")
    local xi = inner:watch(outer:watch(ms.tensor{1, 2}), ms.ones(2))
    assert_error_has("pop: not allowed inside the forward or jvp rule", popper, xi)
    inner:free()
    outer:free()
    assert.are.same({3, 6}, (xi * 3):totable())
    assert.are.equal(0, core.ad_depth())

    local obj = core.objective_from_callbacks{name = "nograd", dim = 2,
      value = function(v) return (v * v):sum() end}
    local calls_grad = core.custom{name = "calls_grad", forward = function(a) return obj:grad(a) end}
    assert.are.same({2, 4}, calls_grad(ms.tensor{1, 2}):totable())
    local tape2 <close> = core.ad_push("reverse")
    assert_error_has("grad: objective 'nograd' has no grad callback", calls_grad, tape2:watch(ms.tensor{1, 2}))
  end)

  it("meta specs whose fields close the tensors and objectives they hold", function()
    -- a proxy spec: reading one field closes the task's w0 (before or after the binding read it)
    local function run(closing_field)
      local w0 = ms.ones(2)
      local obj = ms.objective.quadratic(ms.eye(2))
      local base = {optimizer = ms.optim.gd{lr = 0.1}.c, tasks = {{objective = obj, w0 = w0}}, hosts = {false},
                    steps = 3, kind = "custom", on = "train", method = "reverse", name = "m",
                    fn = function(traj) return traj.losses[traj.T] end}
      local spec = setmetatable({}, {__index = function(_, k)
        if k == closing_field then close(w0) getmetatable(obj).__close(obj) collectgarbage() end
        return base[k]
      end})
      return pcall(core.meta_value_and_grad, spec)
    end
    -- closed before the binding reads the task: a clean error
    local ok, err = run("method")
    assert.is_false(ok)
    assert.truthy(tostring(err):find("released", 1, true), err)
    -- closed after: the binding holds its own references, the run completes
    ok, err = run("fn")
    assert.is_true(ok, err)
    assert.are.equal("ok", err.status)
  end)

  it("objective calls whose callbacks close the point, the direction or the objective", function()
    local w, v, obj = ms.tensor{1, 2}, ms.tensor{1, 0}, nil
    local function f(x) close(w) close(x) collectgarbage() return ms.tensor(1) end
    obj = core.objective_from_callbacks{name = "closer", dim = 2, value = f,
      grad = function(x) close(w) close(x) return ms.zeros(2) end,
      hvp = function(_, d) close(v) close(d) getmetatable(obj).__close(obj) collectgarbage() return ms.ones(2) end}
    assert.are.equal(1, obj:value(w):item())
    w = ms.tensor{1, 2}
    assert.are.same({0, 0}, obj:grad(w):totable())
    w = ms.tensor{1, 2}
    assert.are.same({1, 1}, obj:hvp(w, v):totable())
    assert_argerror(1, "objective has been released", obj.value, obj, ms.zeros(2))
    local q = core.objective_quadratic(ms.eye(2))
    for _, m in ipairs{"value", "grad", "hvp"} do
      local t, d = ms.ones(2), ms.ones(2)
      assert_released(armed(t, q[m], q, t, d))
      t = ms.ones(2)
      if m == "hvp" then assert_released(armed(d, q[m], q, t, d)) end
    end
  end)

  it("objective constructors with option tables that close their tensors", function()
    local H, ws = ms.eye(2), ms.ones(2)
    local opts = setmetatable({}, {__index = function(_, k)
      if k == "wstar" then return ws end
      if k == "fstar" then close(H) close(ws) return 1 end
    end})
    assert_argerror(1, "tensor has been released", core.objective_quadratic, H, opts)
    H = ms.eye(2)
    assert_argerror(2, "field 'wstar': tensor has been released", core.objective_quadratic, H, opts)
    local X, y = ms.ones(2, 2), ms.ones(2)
    assert_released(armed(X, core.objective_least_squares, X, y))
    X = ms.ones(2, 2)
    assert_released(armed(y, core.objective_logistic, X, y, 0.5))
  end)
end)

describe("released levels, custom primitives and objectives", function()
  local core = require "metastep.core"

  local function err(f, ...) return select(2, pcall(f, ...)) end

  it("every level method on a freed level raises", function()
    for _, how in ipairs{"free", "close", "gc"} do
      local lv = core.ad_push("reverse")
      local x = lv:watch(ms.ones(2))
      local mt = getmetatable(lv)
      if how == "free" then lv:free() elseif how == "close" then mt.__close(lv) else mt.__gc(lv) end
      lv:free() -- twice is harmless
      for _, m in ipairs{"pop", "watch", "gradient", "tangent", "is_tracked", "size"} do
        local e = err(mt.__index[m], lv, x, {x})
        assert.is_truthy(e:find("(level has been freed)", 1, true), m .. ": " .. e)
      end
      assert.are.equal(0, core.ad_depth())
    end
  end)

  it("a custom primitive after its __gc ran, alone and on a tape", function()
    local op = core.custom{name = "gone", forward = function(a) return a * 2 end,
      vjp = function(g) return g * 2 end, jvp = function(t) return t * 2 end}
    local tape = core.ad_push("reverse")
    local x = tape:watch(ms.tensor{1, 2})
    local y = op(x):sum()
    tape:pop()
    getmetatable(op).__gc(op)
    getmetatable(op).__gc(op)
    collectgarbage()
    assert.are.equal("custom primitive has been released", err(op, x))
    assert.is_truthy(err(tape.gradient, tape, y, {x}):find("gone: custom primitive was released", 1, true))
    tape:free()
  end)

  it("objective methods after __close", function()
    local o = core.objective_quadratic(ms.eye(2))
    getmetatable(o).__close(o)
    getmetatable(o).__gc(o)
    for _, m in ipairs{"value", "grad", "hvp", "dim", "name", "parts"} do
      local e = err(getmetatable(o).__index[m], o, ms.zeros(2), ms.zeros(2))
      assert.is_truthy(e:find("(objective has been released)", 1, true), m .. ": " .. e)
    end
    assert.are.equal("Objective (released)", tostring(o))
  end)
end)
