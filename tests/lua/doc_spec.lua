-- The documentation source (lua/metastep/doc.lua, LuaLS annotations) against the module:
-- every public function reachable from require "metastep" (its submodules, the tensor and
-- objective methods) has an entry with a description, an example and every parameter named
-- and typed; for functions written in Lua the documented parameters are the real ones
-- (debug.getlocal), in order. help(f) prints the same entry. A function added on another
-- branch without an entry fails the first test with its name.
local ms = require "metastep"
local help = require "metastep.help"

describe("the annotation file", function()
  local docs = help.docs()
  local names = help.names(ms)

  it("is the embedded metastep.doc and parses into entries and classes", function()
    assert.is_string(help.source())
    assert.truthy(help.source():find("^%-%-%-@meta"))
    assert.is_not_nil(docs.functions["ms.meta.train"])
    assert.is_not_nil(docs.classes["metastep.TrainOptions"])
  end)

  it("documents every public function of the module", function()
    local missing = {}
    for _, list in pairs(names) do
      local found = false
      for _, name in ipairs(list) do found = found or docs.functions[name] ~= nil end
      if not found then missing[#missing + 1] = table.concat(list, " = ") end
    end
    table.sort(missing)
    assert.are.equal("", table.concat(missing, ", "),
      "functions without an entry in lua/metastep/doc.lua: " .. table.concat(missing, ", "))
  end)

  it("has no entry for a function the module does not have", function()
    local known = {}
    for _, list in pairs(names) do for _, name in ipairs(list) do known[name] = true end end
    local stale = {}
    for _, name in ipairs(docs.order) do if not known[name] then stale[#stale + 1] = name end end
    assert.are.equal("", table.concat(stale, ", "), "entries for functions that do not exist")
  end)

  it("names and types every parameter, and gives a description and an example", function()
    local bad = {}
    for _, name in ipairs(docs.order) do
      local e = docs.functions[name]
      for i, p in ipairs(e.params) do
        if not (p.name and p.name:match("^[%a_][%w_]*$") or p.name == "...") or not p.type then
          bad[#bad + 1] = ("%s: parameter %d (%s) lacks a name or a type"):format(name, i, tostring(p.name))
        end
      end
      if #e.desc == 0 then bad[#bad + 1] = name .. ": no description" end
      if #e.example == 0 then bad[#bad + 1] = name .. ": no example" end
      -- the signature's parameters are the documented ones
      local sig = {}
      for a in e.signature:match("%((.*)%)"):gmatch("[%w_.]+") do sig[#sig + 1] = a end
      local documented = {}
      for i, p in ipairs(e.params) do documented[i] = p.name end
      if table.concat(sig, ",") ~= table.concat(documented, ",") then
        bad[#bad + 1] = ("%s: signature (%s) but @param (%s)"):format(name, table.concat(sig, ", "),
                                                                     table.concat(documented, ", "))
      end
    end
    assert.are.equal("", table.concat(bad, "\n"))
  end)

  it("gives the real parameters of the functions written in Lua, in order", function()
    local bad, checked = {}, 0
    for f, list in pairs(names) do
      local info = debug.getinfo(f, "Su")
      local e = help.entry(f)
      if info.what == "Lua" and e then
        checked = checked + 1
        local real = {}
        for i = 1, info.nparams do real[i] = debug.getlocal(f, i) end
        local documented = {}
        for i, p in ipairs(e.params) do documented[i] = p.name end
        if table.concat(real, ",") ~= table.concat(documented, ",") then
          bad[#bad + 1] = ("%s(%s) documented as (%s)"):format(list[1], table.concat(real, ", "),
                                                               table.concat(documented, ", "))
        end
      end
    end
    assert.is_true(checked >= 20, "only " .. checked .. " Lua functions checked")
    assert.are.equal("", table.concat(bad, "\n"))
  end)

  it("defines every options class a parameter names, with typed fields", function()
    local bad = {}
    for _, name in ipairs(docs.order) do
      for _, p in ipairs(docs.functions[name].params) do
        local t = p.type and p.type:match("^(metastep%.[%w_]+)")
        if t and not docs.classes[t] then bad[#bad + 1] = name .. ": unknown class " .. t end
      end
    end
    for cname, c in pairs(docs.classes) do
      for _, f in ipairs(c.fields) do
        if not f.type then bad[#bad + 1] = cname .. "." .. f.name .. " has no type" end
      end
    end
    assert.are.equal("", table.concat(bad, "\n"))
  end)
end)

describe("the parser", function()
  it("reads params, optional params, returns, classes with parents and fenced examples", function()
    local d = help.parse(table.concat({
      "---@class A.Opts : A.Base",
      "---@field k? integer the k (default 3)",
      "local x = {}",
      "",
      "---Does it.",
      "---Example:",
      "---```lua",
      "---  f(1)",
      "---```",
      "---@param a number the a",
      "---@param opts? A.Opts options",
      "---@return string s",
      "function ms.f(a, opts) end",
      "---Method.",
      "---Example: `t:m()`",
      "function Tensor:m() end",
    }, "\n"))
    local f = d.functions["ms.f"]
    assert.are.same({"Does it."}, f.desc)
    assert.are.same({"  f(1)"}, f.example)
    assert.are.same({name = "a", optional = false, type = "number", desc = "the a"}, f.params[1])
    assert.are.same({name = "opts", optional = true, type = "A.Opts", desc = "options"}, f.params[2])
    assert.are.same({{type = "string", desc = "s"}}, f.returns)
    assert.are.equal("A.Base", d.classes["A.Opts"].parent)
    assert.are.same({name = "k", optional = true, type = "integer", desc = "the k (default 3)"},
                    d.classes["A.Opts"].fields[1])
    assert.are.same({"t:m()"}, d.functions["ms.Tensor.m"].example)
    assert.are.equal("Tensor:m()", d.functions["ms.Tensor.m"].signature)
  end)
end)

describe("help(f)", function()
  local function captured(fn, ...)
    local out = {}
    local saved = _G.print
    _G.print = function(...)
      local parts = {}
      for i = 1, select("#", ...) do parts[i] = tostring((select(i, ...))) end
      out[#out + 1] = table.concat(parts, "\t")
    end
    local ok, err = pcall(fn, ...)
    _G.print = saved
    assert(ok, err)
    return table.concat(out, "\n")
  end

  it("prints the signature, the options with their defaults and an example", function()
    local text = captured(ms.help, ms.meta.train)
    assert.truthy(text:find("ms.meta.train(opts)", 1, true))
    assert.truthy(text:find("iterations%s+integer%s+meta%-iterations %(default 100%)"))
    assert.truthy(text:find("steps%s+integer")) -- the spec fields of the parent class
    assert.truthy(text:find("Example:", 1, true))
    -- a field the options class redefines (checkpoint: a file or the spec's stride) is shown once
    local _, count = text:gsub("\n  checkpoint%s+string|integer%s", "")
    assert.are.equal(1, count)
    assert.falsy(text:find("\n  checkpoint%s+integer%s"))
  end)

  it("finds a function under any of its names (ms.grad is ms.autodiff.grad, t:abs is ms.abs)", function()
    assert.truthy(captured(ms.help, ms.autodiff.grad):find("ms.grad(f, opts)", 1, true))
    assert.truthy(captured(ms.help, ms.zeros{1}.abs):find("ms.abs(x)", 1, true))
    assert.truthy(captured(ms.help, "meta.value_and_grad"):find("ms.meta.value_and_grad(spec)", 1, true))
  end)

  it("says so for a function outside the module", function()
    assert.are.equal("help: not a function of metastep", captured(ms.help, print))
  end)
end)
