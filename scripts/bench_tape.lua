--- Benchmark of the autodiff tape.
-- Usage: metastep scripts/bench_tape.lua [--csv FILE] [--ops N] [--reps R] [--n N]
--
-- (a) Recording overhead on small tensors: N element-wise ops on 10-element vectors,
--     without any level and under a reverse tape (every op recorded), as ops per second
--     and their ratio, for the loop alone and including the release of what it made
--     (without a tape intermediates are freed during the loop; on a tape they live until
--     the tape is freed); plus the backward pass over that tape, in tape nodes per second.
-- (b) Cost of a gradient relative to the function on a matvec workload:
--     f(x) = sum(tanh(A x)) with A of size n x n (default 1000), median of R runs of
--     f(x) and of grad(f)(x) (reverse mode, so ideally 2-3x), and of the gradient with
--     respect to A as well (which adds an n x n outer product).
-- Times are CPU seconds from os.clock. With a multithreaded OpenBLAS they include the
-- worker threads, which spin (sched_yield) for a while after each BLAS call: run with
-- OPENBLAS_NUM_THREADS=1 for steadier numbers in (b). Nothing is asserted: timings
-- belong here, not in the tests.
local ms = require "metastep"

local function usage(msg)
  io.stderr:write(("bench_tape: %s\nusage: metastep scripts/bench_tape.lua [--csv FILE] [--ops N] " ..
    "[--reps R] [--n N]\n"):format(msg))
  os.exit(2)
end

local HELP = [[
usage: metastep scripts/bench_tape.lua [--csv FILE] [--ops N] [--reps R] [--n N]
Benchmarks the autodiff tape: recording overhead and the cost of a gradient.
  --csv FILE   also write the results as CSV to FILE
  --ops N      element-wise ops in the recording test (default: 100000)
  --reps R     repetitions of each timing, the median is reported (default: 21)
  --n N        matrix size of the matvec workload (default: 1000)
  --help       print this help and exit]]

local function parse_args(argv)
  local opts = {ops = 100000, reps = 21, n = 1000}
  local i = 1
  while i <= #argv do
    local a = argv[i]
    local v = argv[i + 1]
    if a == "--help" or a == "-h" then
      print(HELP)
      os.exit(0)
    elseif a == "--csv" then
      if not v then usage("--csv needs a file name") end
      opts.csv = v
    elseif a == "--ops" or a == "--reps" or a == "--n" then
      local k = math.tointeger(tonumber(v))
      if not k or k < 1 then usage(("%s needs a positive integer, got %s"):format(a, tostring(v))) end
      opts[a:sub(3)] = k
    else
      usage(("unknown argument '%s'"):format(a))
    end
    i = i + 2
  end
  return opts
end

local function median(xs)
  local s = {}
  for i, x in ipairs(xs) do s[i] = x end
  table.sort(s)
  local m = #s // 2
  if #s % 2 == 1 then return s[m + 1] end
  return (s[m] + s[m + 1]) / 2
end

-- CPU seconds of one call of fn (after a full collection, so garbage from earlier runs
-- is not charged to this one).
local function time(fn)
  collectgarbage("collect")
  local t0 = os.clock()
  fn()
  return os.clock() - t0
end

local function median_time(reps, fn)
  local ts = {}
  for r = 1, reps do ts[r] = time(fn) end
  return median(ts)
end

-- ---- (a) recorded ops per second on small tensors ----

-- nops element-wise ops (a mul and an add per step) on 10-element vectors; with a level,
-- x is watched, so every op is recorded. Returns the last value (and the watched x).
local function small_ops(nops, level, x, c)
  local xw = level and level:watch(x) or x
  local y = xw
  for _ = 1, nops // 2 do
    y = y * c + xw
  end
  return y, xw
end

-- One run: seconds in the loop, seconds to release everything it made (a full
-- collection, and freeing the tape), and for a tape the backward pass and its size.
local function small_run(nops, x, c, with_tape)
  collectgarbage("collect")
  local r = {}
  local tape = with_tape and ms.ad_push("reverse") or nil
  local t0 = os.clock()
  local y, xw = small_ops(nops, tape, x, c)
  r.loop = os.clock() - t0
  if tape then
    local s = y:sum()
    tape:pop()
    r.nodes = tape:size()
    t0 = os.clock()
    tape:gradient(s, {xw})
    r.backward = os.clock() - t0
  end
  y, xw = nil, nil -- luacheck: ignore 311 (drop the references before the timed cleanup)
  t0 = os.clock()
  if tape then tape:free() end
  collectgarbage("collect")
  r.cleanup = os.clock() - t0
  return r
end

local function bench_small(opts)
  local nops = opts.ops - opts.ops % 2
  local x = ms.randn({10}, {seed = 1})
  local c = ms.full({10}, 0.5)
  local reps = math.max(5, opts.reps // 2)
  small_run(1000, x, c, true) -- warm up
  local plain, plain_all, taped, taped_all, backward, nodes = {}, {}, {}, {}, {}, 0
  for k = 1, reps do
    local p = small_run(nops, x, c, false)
    local t = small_run(nops, x, c, true)
    plain[k], plain_all[k] = p.loop, p.loop + p.cleanup
    taped[k], taped_all[k] = t.loop, t.loop + t.cleanup
    backward[k], nodes = t.backward, t.nodes
  end
  assert(ms.ad_depth() == 0)
  local rp, rt = nops / median(plain), nops / median(taped)
  local rpa, rta = nops / median(plain_all), nops / median(taped_all)
  return {
    {"small ops (10 elements), no tape", rp, "ops/s"},
    {"small ops (10 elements), recorded on a tape", rt, "ops/s"},
    {"tape slowdown (no-tape rate / tape rate)", rp / rt, "x"},
    {"  the same including release (GC, tape free): no tape", rpa, "ops/s"},
    {"  including release: on a tape", rta, "ops/s"},
    {"  including release: slowdown", rpa / rta, "x"},
    {("backward over the tape (%d nodes)"):format(nodes), nodes / median(backward), "nodes/s"},
  }
end

-- ---- (b) grad(f) time over f time, 1000 x 1000 matvec ----

local function bench_matvec(opts)
  local n = opts.n
  local A = ms.randn({n, n}, {seed = 2, std = 1 / math.sqrt(n)})
  local x = ms.randn({n}, {seed = 3})
  local function f(v, M) return ms.tanh(ms.matvec(M or A, v)):sum() end
  local gx = ms.grad(f)
  local gxa = ms.grad(f, {argnums = {1, 2}})
  f(x); gx(x); gxa(x, A) -- warm up (BLAS threads, allocator)
  local tf = median_time(opts.reps, function() f(x) end)
  local tg = median_time(opts.reps, function() gx(x) end)
  local tga = median_time(opts.reps, function() gxa(x, A) end)
  local shape = ("%dx%d"):format(n, n)
  return {
    {("f(x) = sum(tanh(A x)), A %s"):format(shape), tf * 1e3, "ms"},
    {"grad(f)(x), gradient wrt x", tg * 1e3, "ms"},
    {"grad(f) / f, wrt x", tg / tf, "x"},
    {"grad(f)(x, A), gradient wrt x and A", tga * 1e3, "ms"},
    {"grad(f) / f, wrt x and A", tga / tf, "x"},
  }
end

-- ---- output ----

local function fmt(v)
  if v >= 1e5 then return ("%.3e"):format(v) end
  if v >= 100 then return ("%.1f"):format(v) end
  return ("%.3f"):format(v)
end

local function print_table(rows)
  local w = 6
  for _, r in ipairs(rows) do w = math.max(w, #r[1]) end
  local line = ("-"):rep(w + 24)
  print(("%-" .. w .. "s  %12s  %-8s"):format("metric", "value", "unit"))
  print(line)
  for _, r in ipairs(rows) do
    print(("%-" .. w .. "s  %12s  %-8s"):format(r[1], fmt(r[2]), r[3]))
  end
end

local function csv_field(s)
  s = tostring(s)
  if s:find('[,"\n]') then return '"' .. s:gsub('"', '""') .. '"' end
  return s
end

local function write_csv(path, rows)
  local fh, err = io.open(path, "w")
  if not fh then return nil, err end
  fh:write("metric,value,unit\n")
  for _, r in ipairs(rows) do
    fh:write(("%s,%.17g,%s\n"):format(csv_field(r[1]), r[2], csv_field(r[3])))
  end
  fh:close()
  return true
end

local function main(argv)
  local opts = parse_args(argv)
  print(("metastep %s: tape benchmark (%d small ops, matvec n = %d, %d repetitions, median)")
    :format(ms.version, opts.ops, opts.n, opts.reps))
  local rows = {}
  for _, r in ipairs(bench_small(opts)) do rows[#rows + 1] = r end
  for _, r in ipairs(bench_matvec(opts)) do rows[#rows + 1] = r end
  print_table(rows)
  if opts.csv then
    local ok, err = write_csv(opts.csv, rows)
    if not ok then
      io.stderr:write(("bench_tape: cannot write %s: %s\n"):format(opts.csv, err))
      os.exit(1)
    end
    print(("wrote %s"):format(opts.csv))
  end
end

main(arg or {})
