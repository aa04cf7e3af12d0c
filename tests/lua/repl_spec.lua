-- The prompt's printer and Tab completion (lua/metastep/repl.lua), without a terminal: the
-- tmux test (tests/sh/test_repl.sh) drives the same code through readline.
local ms = require "metastep"
local repl = require "metastep.repl"

describe("repl.show", function()
  it("prints tables as constructors: the array part, then number keys, then names, sorted", function()
    assert.are.equal("{2}", repl.show(ms.randn{2}:shape()))
    assert.are.equal('{1, 2, "a\\nb", [10] = 0, b = true, c = 1.5, ["not id"] = 3}',
                     repl.show({1, 2, "a\nb", b = true, c = 1.5, ["not id"] = 3, [10] = 0}))
    assert.are.equal("{}", repl.show({}))
    assert.are.equal("{[\"end\"] = 1}", repl.show({["end"] = 1}))
  end)

  it("prints a top-level string as it is and other values through tostring", function()
    assert.are.equal("a\nb", repl.show("a\nb"))
    assert.are.equal("nil", repl.show(nil))
    assert.are.equal(tostring(ms.eye(2)), repl.show(ms.eye(2)))
  end)

  it("shows a function inside a table without its address", function()
    assert.are.equal("{f = function}", repl.show({f = print}))
    assert.truthy(repl.show(print):find("^builtin: ") or repl.show(print):find("^function: "))
  end)

  it("cuts nesting at the depth limit and long tables at the item limit", function()
    assert.are.equal("{1, {2, {3, {...}}}}", repl.show({1, {2, {3, {4, {5}}}}}))
    local long = {}
    for i = 1, 25 do long[i] = i end
    local text = repl.show(long)
    assert.truthy(text:find("20,", 1, true))
    assert.falsy(text:find("21", 1, true))
    assert.truthy(text:find("... (5 more)", 1, true))
  end)

  it("marks a cycle instead of recursing", function()
    local t = {name = "x"}
    t.self = t
    assert.are.equal('{name = "x", self = <cycle>}', repl.show(t))
  end)

  it("breaks a wide table into lines", function()
    local t = {}
    for i = 1, 10 do t["key_number_" .. i] = i end
    local text = repl.show(t)
    assert.truthy(text:find("^{\n  key_number_1 = 1,\n"))
    assert.truthy(text:find("\n}$"))
  end)

  it("shows small tensors inside tables by value, larger ones by shape", function()
    assert.are.equal("{a = tensor{1.0, 2.0}, b = Tensor[3x4], c = tensor(5.0)}",
                     repl.show({a = ms.tensor{1, 2}, b = ms.zeros{3, 4}, c = ms.tensor(5)}))
  end)

  it("prints a meta-gradient result as a record of its fields", function()
    local r = ms.meta.value_and_grad{objective = ms.objective.quadratic(ms.eye(2)), optimizer = ms.optim.gd{lr = 0.1},
                                     w0 = ms.ones{2}, steps = 3, meta = "naive"}
    assert.is_true(repl.is_meta_result(r))
    local text = repl.show(r)
    assert.truthy(text:find("^{ %-%- meta result\n"))
    assert.truthy(text:find("\n  value   = " .. ("%.10g"):format(r.value), 1, true))
    assert.truthy(text:find("\n  status  = ok\n", 1, true))
    assert.truthy(text:find("\n  grad.lr = " .. ("%.10g"):format(r.grad.lr), 1, true))
  end)

  it("prints a meta-training result with its history summarised", function()
    local run = ms.meta.train{objective = ms.objective.quadratic(ms.eye(2)), optimizer = ms.optim.gd{lr = 0.1},
                              w0 = ms.ones{2}, steps = 3, iterations = 4, progress = false}
    local text = repl.show(run)
    assert.truthy(text:find("^{ %-%- meta.train result\n"))
    assert.truthy(text:find("\n  history    = 4 records\n", 1, true))
    assert.truthy(text:find("\n  stopped    = done\n", 1, true))
    assert.truthy(text:find("\n  history[4] = {value = ", 1, true))
  end)
end)

describe("repl.complete", function()
  local env = {ms = ms, print = print, pairs = pairs, t = ms.zeros{2}, s = "text", obj = ms.objective.quadratic(ms.eye(2))}

  it("completes fields of a module path", function()
    assert.are.same({"ms.mean", "ms.memory", "ms.meta"}, repl.complete("ms.me", env))
    assert.are.same({"ms.meta"}, repl.complete("ms.met", env))
    assert.are.same({"ms.meta.train"}, repl.complete("ms.meta.tr", env))
  end)

  it("completes globals and keywords", function()
    assert.are.same({"pairs", "print"}, repl.complete("p", env))
    assert.are.same({"while"}, repl.complete("whi", env))
  end)

  it("completes tensor, objective and string methods through the metatable", function()
    assert.are.same({"t:reshape"}, repl.complete("t:resh", env))
    assert.are.same({"obj:grad", "obj:grad_batch"}, repl.complete("obj:gra", env))
    assert.are.same({"s:upper"}, repl.complete("s:upp", env))
  end)

  it("does not list the upvalues of a Lua __index function as fields", function()
    local proxy = setmetatable({own = 1}, {__index = function(_, k) return env[k] end})
    assert.are.same({"proxy.own"}, repl.complete("proxy.", {proxy = proxy}))
  end)

  it("offers nothing for a path that does not resolve, and runs no code", function()
    assert.are.same({}, repl.complete("nothere.x", env))
    assert.are.same({}, repl.complete("f().x", env))
  end)
end)
