--- Figures and tables for experiment reports: CSV files and PNG plots drawn by gnuplot
-- (pngcairo terminal), from Lua data. Runtime failures (no gnuplot, unwritable file)
-- return nil and a message; misuse raises.
local M = {}
local raise = require("metastep.util").raise

local function quote(s)
  return '"' .. tostring(s):gsub('\\', '\\\\'):gsub('"', '\\"') .. '"'
end

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

--- Is gnuplot available?
function M.available()
  local ok = os.execute("command -v gnuplot >/dev/null 2>&1")
  return ok == true or ok == 0
end

--- figure{file = "x.png", title =, xlabel =, ylabel =, logx =, logy =, series = {...},
--   vlines = {{x =, label =}}, hlines = {{y =, label =}}, size = {w, h}, key = "top left",
--   xrange = {a, b}, yrange = {a, b}}
-- Each series: {x = {...}, y = {...}, label =, with = "linespoints" | "lines" | "points",
--   yerr = {...} (error bars), dash = true}. Non-finite points are left out of the plot.
-- Writes file, file .. ".dat" (the plotted data) and file .. ".gp" (the script).
function M.figure(spec)
  if type(spec) ~= "table" or type(spec.file) ~= "string" then
    raise("", "%s", "plot.figure: expected a table with a 'file' name")
  end
  if type(spec.series) ~= "table" or #spec.series == 0 then
    raise("", "%s", "plot.figure: expected a non-empty 'series' list")
  end
  local dat = spec.file:gsub("%.png$", "") .. ".dat"
  local gp = spec.file:gsub("%.png$", "") .. ".gp"
  local f, err = io.open(dat, "w")
  if not f then return nil, "cannot write " .. dat .. ": " .. err end
  for i, s in ipairs(spec.series) do
    if type(s.x) ~= "table" or type(s.y) ~= "table" or #s.x ~= #s.y then
      f:close()
      raise("", "plot.figure: series %d needs x and y lists of equal length", i)
    end
    f:write(("# series %d: %s\n"):format(i, s.label or ""))
    local n = 0
    for k = 1, #s.x do
      local x, y = s.x[k], s.y[k]
      local e = s.yerr and s.yerr[k]
      local finite = x == x and y == y and math.abs(x) ~= math.huge and math.abs(y) ~= math.huge
      if finite and spec.logy and y <= 0 then finite = false end
      if finite and spec.logx and x <= 0 then finite = false end
      if finite then
        f:write(fmt(x), " ", fmt(y), e and (" " .. fmt(e)) or "", "\n")
        n = n + 1
      end
    end
    if n == 0 then f:write("nan nan\n") end
    f:write("\n\n")
  end
  f:close()
  local size = spec.size or {900, 560}
  local lines = {
    ("set terminal pngcairo size %d,%d enhanced font 'DejaVu Sans,11'"):format(size[1], size[2]),
    "set output " .. quote(spec.file),
    "set title " .. quote(spec.title or ""),
    "set xlabel " .. quote(spec.xlabel or ""),
    "set ylabel " .. quote(spec.ylabel or ""),
    "set grid",
    "set key " .. (spec.key or "outside right top") .. " box opaque",
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
    local style = ("with %s lw 2 pt 7 ps 0.7%s"):format(with, s.dash and " dt 2" or "")
    plots[#plots + 1] = ("%s index %d using %s %s title %s"):format(quote(dat), i - 1, using, style,
                                                                    quote(s.label or ""))
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
  if not M.available() then return nil, "gnuplot not found (apt-get install gnuplot-nox)" end
  local ok = os.execute("gnuplot " .. quote(gp) .. " 2>" .. quote(spec.file .. ".log"))
  if not (ok == true or ok == 0) then
    local lf = io.open(spec.file .. ".log")
    local msg = lf and lf:read("a") or ""
    if lf then lf:close() end
    return nil, "gnuplot failed on " .. gp .. ": " .. msg
  end
  os.remove(spec.file .. ".log")
  return true
end

return M
