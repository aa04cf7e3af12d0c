-- ms.plot (issue 14, item 8): gnuplot runs with an argument vector, never through a shell, and
-- every user string placed in the gnuplot script is quoted; invalid options are refused with
-- the option named. Regression tests: a file name containing $(touch ...) runs nothing, a
-- title with quotes, newlines and a gnuplot command renders as text.
local ms = require "metastep"
local core = ms.core

local function exists(path)
  local f = io.open(path)
  if f then f:close() end
  return f ~= nil
end

local function read(path)
  local f = assert(io.open(path))
  local s = f:read("a")
  f:close()
  return s
end

-- A fresh directory (mkdir through spawn: an argument vector, no shell).
local function tmpdir()
  local base = os.tmpname()
  os.remove(base)
  assert(core.spawn({"mkdir", "-p", base}))
  return base
end

local function err_of(fn, ...)
  local ok, msg = pcall(fn, ...)
  assert.is_false(ok)
  return tostring(msg)
end

local series = {{x = {1, 2, 3}, y = {1, 4, 9}, label = "s"}}

describe("core.spawn", function()
  it("passes each argument as one word, with no shell expansion", function()
    local dir = tmpdir()
    local out = dir .. "/out.txt"
    assert.is_true(core.spawn({"printf", "%s|", "a b", "$(touch " .. dir .. "/pwned)", "'q'"}, {stdout = out}))
    assert.are.equal("a b|$(touch " .. dir .. "/pwned)|'q'|", read(out))
    assert.is_false(exists(dir .. "/pwned"))
    core.spawn({"rm", "-rf", dir})
  end)

  it("reports the exit status and a missing program like os.execute", function()
    local ok, how, code = core.spawn({"false"})
    assert.are.same({nil, "exit", 1}, {ok, how, code})
    local ok2, msg = core.spawn({"metastep-no-such-program"})
    assert.is_nil(ok2)
    assert.truthy(msg:find("metastep%-no%-such%-program"))
  end)

  it("refuses a non-string argument", function()
    assert.truthy(err_of(core.spawn, {"echo", {}}):find("argv%[2%] must be a string, got table"))
  end)
end)

describe("plot.figure", function()
  it("does not run $(...) in a file name", function()
    local dir = tmpdir()
    -- the file name's directory part contains "$(touch DIR" and its base "pwned).png"
    local sub = dir .. "/p$(touch " .. dir
    assert(core.spawn({"mkdir", "-p", sub}))
    local file = sub .. "/pwned).png"
    local ok, err = ms.plot.figure{file = file, series = series}
    assert.is_false(exists(dir .. "/pwned"), "a shell ran the file name")
    if ms.plot.available() then
      assert.is_true(ok, err)
      assert.is_true(exists(file))
    end
    core.spawn({"rm", "-rf", dir})
  end)

  it("quotes a title with quotes, backslashes and newlines (no gnuplot command escapes)", function()
    local dir = tmpdir()
    local file = dir .. "/t.png"
    local title = 'say "hi" \\ back\nsystem "touch ' .. dir .. '/pwned2"\n' .. "it's"
    local ok, err = ms.plot.figure{file = file, title = title, xlabel = 'x"\n!touch ' .. dir .. '/pwned3',
                                   series = {{x = {1, 2}, y = {3, 4}, label = 'l"\nquit'}}}
    local gp = read(dir .. "/t.gp")
    -- the title is one script line, every quote escaped, the newlines as \n
    local line = gp:match("set title ([^\n]*)")
    assert.are.equal('"say \\"hi\\" \\\\ back\\nsystem \\"touch ' .. dir .. '/pwned2\\"\\nit\'s"', line)
    assert.falsy(gp:find("\nsystem", 1, true))
    assert.falsy(gp:find("\n!touch", 1, true))
    assert.falsy(gp:find("\nquit", 1, true))
    if ms.plot.available() then
      assert.is_true(ok, err)
      assert.is_true(exists(file))
    end
    assert.is_false(exists(dir .. "/pwned2"))
    assert.is_false(exists(dir .. "/pwned3"))
    core.spawn({"rm", "-rf", dir})
  end)

  it("gives every series its own dash type and point type", function()
    local dir = tmpdir()
    local s = {}
    for i = 1, 4 do s[i] = {x = {1, 2, 3}, y = {i, i + 1, i + 2}, label = "s" .. i} end
    ms.plot.figure{file = dir .. "/d.png", series = s}
    local gp = read(dir .. "/d.gp")
    local dts, pts = {}, {}
    for dt, pt in gp:gmatch("dt (%d+) lw [%d.]+ pt (%d+)") do dts[dt], pts[pt] = true, true end
    local n1, n2 = 0, 0
    for _ in pairs(dts) do n1 = n1 + 1 end
    for _ in pairs(pts) do n2 = n2 + 1 end
    assert.are.equal(4, n1)
    assert.are.equal(4, n2)
    core.spawn({"rm", "-rf", dir})
  end)

  it("refuses options that would be placed raw in the script, naming them", function()
    local f = "/nonexistent-dir/x.png"
    local cases = {
      {{key = 'top; system "touch x"'}, "option 'key': 'top;' is not a key placement word"},
      {{xrange = {"1]; !touch x", 2}}, "option 'xrange' must be {a, b} with finite numbers a < b"},
      {{yrange = {2, 1}}, "option 'yrange' must be {a, b} with finite numbers a < b, got {2, 1}"},
      {{size = {"900,1 #", 2}}, "option 'size' must be {width, height}"},
      {{vlines = {{x = "1 nohead"}}}, "vlines[1] must be {x = number, label = text}"},
      {{hlines = {{y = 0 / 0}}}, "hlines[1] must be {y = number, label = text}, got nan"},
      {{title = {}}, "option 'title' must be a string, got table"},
      {{titel = "x"}, "unknown option 'titel'"},
      {{file = "a\nb.png"}, "option 'file' must not contain control characters"},
      {{series = {{x = {1}, y = {1}, with = "lines; !ls"}}}, "series 1: 'with' must be linespoints, lines or points"},
      {{series = {{x = {1}, y = {1}, colour = 1}}}, "unknown series 1 key 'colour'"},
    }
    for _, c in ipairs(cases) do
      local spec = {file = f, series = series}
      for k, v in pairs(c[1]) do spec[k] = v end
      local msg = err_of(ms.plot.figure, spec)
      assert.truthy(msg:find("plot.figure: " .. c[2], 1, true), msg)
      assert.truthy(msg:find("plot_spec.lua:%d+:"), "blamed on the caller: " .. msg)
    end
  end)
end)
