--- Figures and tables for experiment reports: CSV files and PNG plots drawn by gnuplot
-- (pngcairo terminal), from Lua data. Runtime failures (no gnuplot, unwritable file)
-- return nil and a message; misuse raises.
local M = {}
local util = require "metastep.util"
local raise = util.raise

local core = require "metastep.core"

-- A gnuplot double-quoted string: backslash, quote and control characters escaped, so a
-- user string can never end the string or the command line (a newline in a title becomes
-- gnuplot's "\n", a line break in the figure).
local function quote(s)
  s = tostring(s):gsub('[\\"%c]', function(c)
    if c == "\\" then return "\\\\" end
    if c == '"' then return '\\"' end
    if c == "\n" then return "\\n" end
    if c == "\t" then return "\\t" end
    return "" -- other control characters (CR, NUL, escape) are dropped
  end)
  return '"' .. s .. '"'
end
M.quote = quote

local function fmt(v)
  if type(v) == "number" then
    if v ~= v then return "nan" end
    if v == math.huge then return "inf" end
    if v == -math.huge then return "-inf" end
    return ("%.10g"):format(v)
  end
  return tostring(v)
end

--- write_csv(path, header, rows): header a list of column names, rows a list of lists.
function M.write_csv(path, header, rows)
  if type(header) ~= "table" or type(rows) ~= "table" then
    raise("", "%s", "plot.write_csv: expected a header list and a list of rows")
  end
  local f, err = io.open(path, "w")
  if not f then return nil, "cannot write " .. path .. ": " .. err end
  f:write(table.concat(header, ","), "\n")
  for _, row in ipairs(rows) do
    local cells = {}
    for i = 1, #header do
      local v = row[i]
      cells[i] = v == nil and "" or fmt(v)
      if type(v) == "string" and v:find("[,\"]") then cells[i] = '"' .. v:gsub('"', '""') .. '"' end
    end
    f:write(table.concat(cells, ","), "\n")
  end
  f:close()
  return true
end

--- Is gnuplot available? (looked up in PATH by posix_spawnp; no shell)
function M.available()
  local ok = core.spawn({"gnuplot", "--version"}, {stdout = "/dev/null", stderr = "/dev/null"})
  return ok == true
end

local function fail(fmt_, ...) raise("", "plot.figure: " .. fmt_, ...) end

local FIGURE_KEYS = {"file", "title", "xlabel", "ylabel", "logx", "logy", "series", "vlines", "hlines", "size",
                     "key", "xrange", "yrange"}
local SERIES_KEYS = {"x", "y", "label", "with", "yerr", "dash"}
-- the words of gnuplot's `set key` placement that the spec may use
local KEY_WORDS = {}
for w in ("on off inside outside top bottom left right center above below over under horizontal vertical " ..
          "box nobox opaque noopaque reverse noreverse Left Right tmargin bmargin lmargin rmargin"):gmatch("%S+") do
  KEY_WORDS[w] = true
end
local WITH = {linespoints = true, lines = true, points = true}
-- Dash types and point types per series, in draw order: curves differ in grey scale too.
local DASHES = {1, 2, 4, 5, 3, 6}
local POINTS = {7, 5, 9, 13, 11, 3, 1, 2}
local MARKERS = 12
-- Colours with contrast on white (no pale yellow), the dash and point types doing the work in
-- grey scale.
local COLOURS = {"#7b2cbf", "#1b9e77", "#d95f02", "#1f4e9c", "#c2185b", "#5f7f1e", "#8c5a1d", "#555555"}

local function check_known(t, known, what)
  local set = {}
  for _, k in ipairs(known) do set[k] = true end
  for k in pairs(t) do
    if not set[k] then
      fail("unknown %s '%s'%s", what, tostring(k), util.suggest(k, known))
    end
  end
end

local function finite(v) return type(v) == "number" and v == v and math.abs(v) ~= math.huge end

local function check_text(spec, key)
  local v = spec[key]
  if v ~= nil and type(v) ~= "string" and type(v) ~= "number" then
    fail("option '%s' must be a string, got %s", key, type(v))
  end
end

local function check_range(spec, key)
  local r = spec[key]
  if r == nil then return end
  if type(r) ~= "table" or not finite(r[1]) or not finite(r[2]) or not (r[1] < r[2]) then
    fail("option '%s' must be {a, b} with finite numbers a < b, got %s", key,
         type(r) == "table" and ("{%s, %s}"):format(util.show(r[1]), util.show(r[2])) or type(r))
  end
end

local function check_spec(spec)
  if type(spec) ~= "table" then fail("expected a table with a 'file' name, got %s", type(spec)) end
  check_known(spec, FIGURE_KEYS, "option")
  if type(spec.file) ~= "string" or spec.file == "" then
    fail("option 'file' must be a file name, got %s", type(spec.file))
  end
  if spec.file:find("%c") then fail("option 'file' must not contain control characters, got %q", spec.file) end
  if type(spec.series) ~= "table" or #spec.series == 0 then fail("%s", "expected a non-empty 'series' list") end
  for _, k in ipairs{"title", "xlabel", "ylabel"} do check_text(spec, k) end
  for _, k in ipairs{"logx", "logy"} do
    if spec[k] ~= nil and type(spec[k]) ~= "boolean" then
      fail("option '%s' must be a boolean, got %s", k, type(spec[k]))
    end
  end
  check_range(spec, "xrange")
  check_range(spec, "yrange")
  if spec.size ~= nil then
    local sz = spec.size
    if type(sz) ~= "table" or math.tointeger(sz[1]) == nil or math.tointeger(sz[2]) == nil or sz[1] < 16 or
       sz[2] < 16 or sz[1] > 10000 or sz[2] > 10000 then
      fail("option 'size' must be {width, height} in pixels (integers in 16..10000), got %s",
           type(sz) == "table" and ("{%s, %s}"):format(util.show(sz[1]), util.show(sz[2])) or type(sz))
    end
  end
  if spec.key ~= nil then
    if type(spec.key) ~= "string" then fail("option 'key' must be a string, got %s", type(spec.key)) end
    for w in spec.key:gmatch("%S+") do
      if not KEY_WORDS[w] then
        fail("option 'key': '%s' is not a key placement word (top, bottom, left, right, center, inside, " ..
             "outside, above, below, horizontal, vertical, box, off, ...)", w)
      end
    end
  end
  for _, which in ipairs{"vlines", "hlines"} do
    local list = spec[which]
    if list ~= nil then
      if type(list) ~= "table" then fail("option '%s' must be a list, got %s", which, type(list)) end
      local coord = which == "vlines" and "x" or "y"
      for i, v in ipairs(list) do
        if type(v) ~= "table" or not finite(v[coord]) then
          fail("%s[%d] must be {%s = number, label = text}, got %s", which, i, coord,
               type(v) == "table" and util.show(v[coord]) or type(v))
        end
        if v.label ~= nil and type(v.label) ~= "string" and type(v.label) ~= "number" then
          fail("%s[%d].label must be a string, got %s", which, i, type(v.label))
        end
      end
    end
  end
  for i, s in ipairs(spec.series) do
    if type(s) ~= "table" then fail("series %d must be a table, got %s", i, type(s)) end
    check_known(s, SERIES_KEYS, ("series %d key"):format(i))
    if type(s.x) ~= "table" or type(s.y) ~= "table" or #s.x ~= #s.y then
      fail("series %d needs x and y lists of equal length", i)
    end
    for k = 1, #s.x do
      if type(s.x[k]) ~= "number" or type(s.y[k]) ~= "number" then
        fail("series %d: x[%d] and y[%d] must be numbers, got %s and %s", i, k, k, type(s.x[k]), type(s.y[k]))
      end
    end
    if s.yerr ~= nil and (type(s.yerr) ~= "table" or #s.yerr ~= #s.y) then
      fail("series %d: yerr must be a list as long as y", i)
    end
    if s.with ~= nil and not WITH[s.with] then
      fail("series %d: 'with' must be linespoints, lines or points, got %s", i, util.show(s.with))
    end
    if s.label ~= nil and type(s.label) ~= "string" and type(s.label) ~= "number" then
      fail("series %d: label must be a string, got %s", i, type(s.label))
    end
    local dash_type = math.tointeger(s.dash) and s.dash >= 1 and s.dash <= 10
    if s.dash ~= nil and type(s.dash) ~= "boolean" and not dash_type then
      fail("series %d: dash must be a boolean or a dash type 1..10, got %s", i, util.show(s.dash))
    end
  end
end

--- figure{file = "x.png", title =, xlabel =, ylabel =, logx =, logy =, series = {...},
--   vlines = {{x =, label =}}, hlines = {{y =, label =}}, size = {w, h}, key = "top left",
--   xrange = {a, b}, yrange = {a, b}}
-- Each series: {x = {...}, y = {...}, label =, with = "linespoints" | "lines" | "points",
--   yerr = {...} (error bars), dash = true | dash type}. Non-finite points are left out.
-- Series are told apart without colour: each gets its own dash type and point type (series
-- i: DASHES[i], POINTS[i]; dense curves get a marker every few points), so coinciding curves
-- stay distinguishable, in grey scale too. Every option is checked (unknown keys, types, ranges), every
-- user string is quoted for gnuplot, and gnuplot runs with an argument vector (no shell).
-- Writes file, file .. ".dat" (the plotted data) and file .. ".gp" (the script).
function M.figure(spec)
  check_spec(spec)
  local dat = spec.file:gsub("%.png$", "") .. ".dat"
  local gp = spec.file:gsub("%.png$", "") .. ".gp"
  local f, err = io.open(dat, "w")
  if not f then return nil, "cannot write " .. dat .. ": " .. err end
  -- Data blocks: series i is index 2i - 2 (its points) and 2i - 1 (its markers, for dense
  -- curves: about MARKERS points spread evenly along x, or in log x, each series shifted by
  -- a fraction of the spacing so the markers of coinciding curves fall side by side).
  local nseries = #spec.series
  local dense = {}
  for i, s in ipairs(spec.series) do
    f:write(("# series %d: %s\n"):format(i, tostring(s.label or ""):gsub("%c", " ")))
    local px, py = {}, {}
    for k = 1, #s.x do
      local x, y = s.x[k], s.y[k]
      local e = s.yerr and s.yerr[k]
      local ok = finite(x) and finite(y)
      if ok and spec.logy and y <= 0 then ok = false end
      if ok and spec.logx and x <= 0 then ok = false end
      if ok then
        f:write(fmt(x), " ", fmt(y), e and (" " .. fmt(e)) or "", "\n")
        px[#px + 1], py[#py + 1] = x, y
      end
    end
    if #px == 0 then f:write("nan nan\n") end
    f:write("\n\n# markers of series ", i, "\n")
    local with = s.with or "linespoints"
    dense[i] = with == "linespoints" and not s.yerr and #px > MARKERS * 2
    if dense[i] then
      local pos = function(x) return spec.logx and math.log(x) or x end
      local lo, hi = pos(px[1]), pos(px[#px])
      local k, last = 1, 0
      for j = 0, MARKERS - 1 do
        local target = lo + (j + (i - 1) / nseries) * (hi - lo) / MARKERS
        while k < #px and pos(px[k]) < target do k = k + 1 end
        if k ~= last then
          f:write(fmt(px[k]), " ", fmt(py[k]), "\n")
          last = k
        end
      end
    else
      f:write("nan nan\n")
    end
    f:write("\n\n")
  end
  f:close()
  local size = spec.size or {900, 560}
  local key = spec.key or "outside right top"
  local lines = {
    ("set terminal pngcairo size %d,%d enhanced font 'DejaVu Sans,11'"):format(size[1], size[2]),
    "set output " .. quote(spec.file),
    "set title " .. quote(spec.title or ""),
    "set xlabel " .. quote(spec.xlabel or ""),
    "set ylabel " .. quote(spec.ylabel or ""),
    "set grid",
    key:find("off") and "set key off" or ("set key " .. key .. " box opaque"),
  }
  -- log axes label their ticks as powers of ten ("10^{-6}", not "0.0000010")
  if spec.logx then lines[#lines + 1] = "set logscale x"; lines[#lines + 1] = "set format x '10^{%L}'" end
  if spec.logy then lines[#lines + 1] = "set logscale y"; lines[#lines + 1] = "set format y '10^{%L}'" end
  if spec.xrange then lines[#lines + 1] = ("set xrange [%s:%s]"):format(fmt(spec.xrange[1]), fmt(spec.xrange[2])) end
  if spec.yrange then lines[#lines + 1] = ("set yrange [%s:%s]"):format(fmt(spec.yrange[1]), fmt(spec.yrange[2])) end
  local plots = {}
  for i, s in ipairs(spec.series) do
    local with = s.with or "linespoints"
    local using = "1:2"
    if s.yerr then with, using = "yerrorlines", "1:2:3" end
    local dt = DASHES[(i - 1) % #DASHES + 1]
    if s.dash == true then dt = 2 elseif s.dash == false then dt = 1 elseif math.tointeger(s.dash) then dt = s.dash end
    -- earlier series are drawn wider and with bigger points, so a later curve lying exactly on
    -- an earlier one leaves it visible as an outline
    local grow = nseries > 1 and (nseries - i) / (nseries - 1) or 0
    local lw, ps = 1.5 + 1.2 * grow, 0.8 + 0.6 * grow
    local pt = POINTS[(i - 1) % #POINTS + 1]
    local title = quote(s.label or "")
    local dat_i = ("%s index %d"):format(quote(dat), 2 * (i - 1))
    local lc = ("lc rgb '%s'"):format(COLOURS[(i - 1) % #COLOURS + 1])
    local ls = ("%s dt %d lw %.2f"):format(lc, dt, lw)
    if dense[i] then
      -- the line, its markers, and a key entry showing both
      plots[#plots + 1] = ("%s using 1:2 with lines %s notitle"):format(dat_i, ls)
      plots[#plots + 1] = ("%s index %d using 1:2 with points %s pt %d ps %.2f notitle"):format(
        quote(dat), 2 * i - 1, lc, pt, ps)
      plots[#plots + 1] = ("NaN with linespoints %s pt %d ps %.2f title %s"):format(ls, pt, ps, title)
    else
      local style = ("with %s %s"):format(with, ls)
      if with ~= "lines" then style = style .. (" pt %d ps %.2f"):format(pt, ps) end
      plots[#plots + 1] = ("%s using %s %s title %s"):format(dat_i, using, style, title)
    end
  end
  for _, v in ipairs(spec.vlines or {}) do
    lines[#lines + 1] = ("set arrow from %s, graph 0 to %s, graph 1 nohead dt 3 lw 2 lc rgb 'black'"):format(
      fmt(v.x), fmt(v.x))
    if v.label then
      lines[#lines + 1] = ("set label %s at %s, graph 0.95 left offset 0.5,0 font ',10'"):format(
        quote(v.label), fmt(v.x))
    end
  end
  for _, h in ipairs(spec.hlines or {}) do
    local arrow = "set arrow from graph 0, first %s to graph 1, first %s nohead dt 3 lw 2 lc rgb 'black'"
    lines[#lines + 1] = arrow:format(fmt(h.y), fmt(h.y))
    if h.label then
      lines[#lines + 1] = ("set label %s at graph 0.02, first %s offset 0,0.7 font ',10'"):format(
        quote(h.label), fmt(h.y))
    end
  end
  lines[#lines + 1] = "plot " .. table.concat(plots, ", \\\n     ")
  local g
  g, err = io.open(gp, "w")
  if not g then return nil, "cannot write " .. gp .. ": " .. err end
  g:write(table.concat(lines, "\n"), "\n")
  g:close()
  local log = spec.file .. ".log"
  local ok, how, code = core.spawn({"gnuplot", gp}, {stdin = "/dev/null", stdout = "/dev/null", stderr = log})
  if ok == nil and code == nil then
    os.remove(log)
    return nil, "gnuplot not found (apt-get install gnuplot-nox): " .. tostring(how)
  end
  if not ok then
    local lf = io.open(log)
    local msg = lf and lf:read("a") or ""
    if lf then lf:close() end
    return nil, ("gnuplot failed on %s (%s %s): %s"):format(gp, how, tostring(code), msg)
  end
  os.remove(log)
  return true
end

return M
