--- The report kit of the paper reproduction: figures that raise when they cannot be drawn,
-- CSV files, Markdown tables, criterion rows, number formatting and a rate-limited progress
-- line. Every experiment module writes its files and builds its section with these.
local M = {}
local core = require("metastep").core

--- Draws a figure with ms.plot.figure (spec.file relative to dir); raises on failure.
function M.figure(ms, dir, spec)
  local s = {}
  for k, v in pairs(spec) do s[k] = v end
  s.file = dir .. "/" .. spec.file
  local ok, err = ms.plot.figure(s)
  if not ok then error(err, 2) end
end

--- Writes dir/name with a header and a list of rows by ms.plot.write_csv; raises on failure.
function M.csv(ms, dir, name, header, rows)
  local ok, err = ms.plot.write_csv(dir .. "/" .. name, header, rows)
  if not ok then error(err, 2) end
end

--- A Markdown table from a header list and rows of cells (nil cells print empty).
function M.md_table(header, rows)
  local out = {"| " .. table.concat(header, " | ") .. " |", "|" .. ("---|"):rep(#header)}
  for _, r in ipairs(rows) do
    local cells = {}
    for i = 1, #header do cells[i] = tostring(r[i] == nil and "" or r[i]) end
    out[#out + 1] = "| " .. table.concat(cells, " | ") .. " |"
  end
  return table.concat(out, "\n")
end

--- A criterion row of the report: what is required, what was measured, whether it holds.
function M.criterion(text, value, pass)
  return {text = text, value = value, pass = pass and true or false}
end

--- x with p significant digits (4 by default).
function M.fmt(x, p)
  return (("%." .. (p or 4) .. "g"):format(x))
end

--- x as a percentage with two decimals ("nan" for NaN).
function M.pct(x)
  return x ~= x and "nan" or ("%.2f%%"):format(100 * x)
end

--- How many entries of list satisfy pred.
function M.count(list, pred)
  local n = 0
  for _, v in ipairs(list) do if pred(v) then n = n + 1 end end
  return n
end

--- Smallest and largest of f(x) over a list.
function M.range(list, f)
  local lo, hi = math.huge, -math.huge
  for _, x in ipairs(list) do
    local v = f(x)
    lo, hi = math.min(lo, v), math.max(hi, v)
  end
  return lo, hi
end

--- A progress line for a loop of total items with the rate and the time left (wall clock).
-- On a terminal it is updated in place (\r) about twice a second and ends with a newline;
-- otherwise (a log file) it is printed through say(fmt, ...) as a plain line at most every
-- `every` seconds (5 by default) and after the last item. Call :step(i) after item i.
function M.meter(say, label, total, every, out)
  out = out or io.stderr
  local tty = core.isatty(out)
  local m = {t0 = core.clock(), last = -math.huge, every = tty and 0.5 or (every or 5)}
  function m.step(_, i, detail)
    local now = core.clock()
    if now - m.last < m.every and i < total then return end
    m.last = now
    local rate = i / math.max(now - m.t0, 1e-9)
    local text = ("%s: %d/%d%s (%.1f/s, %s left)"):format(label, i, total, detail and (", " .. detail) or "", rate,
      i >= total and "0 s" or ("~%d s"):format(math.ceil((total - i) / math.max(rate, 1e-9))))
    if tty then
      out:write("\r", text, "\27[K", i >= total and "\n" or "")
      out:flush()
    else
      say("%s", text)
    end
  end
  return m
end

--- The Markdown body of an experiment's section (error, claim, settings, evidence, criteria,
-- tables, figures, notes), as scripts/reproduce.lua and scripts/learned_optimizer.lua print it.
function M.section_markdown(s)
  local lines = {}
  local function add(x) lines[#lines + 1] = x end
  if s.error then
    add("The experiment failed with an error:"); add(""); add("```"); add(tostring(s.error)); add("```")
  end
  if s.claim then add("**Claim.** " .. s.claim); add("") end
  if s.settings then add("**Settings.** " .. s.settings); add("") end
  if s.evidence and #s.evidence > 0 then
    add("**Evidence.**"); add("")
    for _, e in ipairs(s.evidence) do add("- " .. e) end
    add("")
  end
  if s.criteria and #s.criteria > 0 then
    add("**Criteria.**"); add(""); add("| criterion | measured | holds |"); add("|---|---|---|")
    for _, c in ipairs(s.criteria) do
      add(("| %s | %s | %s |"):format(c.text, c.value or "", c.pass and "yes" or "**no**"))
    end
    add("")
  end
  for _, t in ipairs(s.tables or {}) do
    if t.title then add("**" .. t.title .. "** (data: `" .. t.file .. "`)") end
    add(""); add(t.markdown or ""); add("")
  end
  for _, f in ipairs(s.figures or {}) do
    add(("![%s](%s)"):format(f.caption or f.file, f.file)); add("")
    add(("*%s* (data: `%s`)"):format(f.caption or "", f.data or (f.file:gsub("%.png$", ".csv")))); add("")
  end
  if s.notes then add(s.notes); add("") end
  return table.concat(lines, "\n")
end

--- Parses the options the experiment scripts share into cfg: --help/-h (prints help, exits 0),
-- --quick, --full (cfg.mode), --out DIR, --seed S (an integer). extra(a, nxt), when given,
-- handles a script's own options: it returns true when it took a, "arg" when it also took the
-- next argument nxt, and false for an unknown one. usage(msg) reports a bad argument and exits.
function M.parse_args(args, cfg, help, usage, extra)
  local i = 1
  while args and args[i] do
    local a = args[i]
    if a == "--help" or a == "-h" then print(help); os.exit(0)
    elseif a == "--quick" then cfg.mode = "quick"
    elseif a == "--full" then cfg.mode = "full"
    elseif a == "--out" then i = i + 1; cfg.out = args[i] or usage("--out needs a directory")
    elseif a == "--seed" then
      i = i + 1
      cfg.seed = math.tointeger(tonumber(args[i] or "")) or usage("--seed needs an integer")
    else
      local took = extra and extra(a, args[i + 1])
      if took == "arg" then i = i + 1 elseif not took then usage("unknown argument " .. a) end
    end
    i = i + 1
  end
  return cfg
end

return M
