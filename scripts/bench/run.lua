-- The benchmark suite: metastep against PyTorch (CPU autograd, float64) on the same workloads, in
-- one run, alternating metastep and the peer job by job over several rounds, next to the floor
-- (T plain matrix-vector products with the same H). Writes a Markdown report: medians and minimums,
-- metastep/PyTorch and metastep/floor ratios, the agreement of the methods, and the targets of
-- issue 12 with PASS or MISS.
--
--   build/metastep scripts/bench/run.lua [--quick] [--big] [--d 100,1000] [--rounds N] [--only quad,ls,loop]
--                  [--threads N] [--clock wall|cpu] [--out FILE] [--python PATH] [--floor PATH]
--
-- The peer is scripts/bench/peer_torch.py, run by Debian's python3 (/usr/bin/python3, where
-- python3-torch lives, then python3 from PATH; --python picks another); without PyTorch the report
-- says so and shows metastep alone. The floor is build/bench_floor (CBLAS dgemv and dsymv). Both are
-- started from an argument vector (ms.core.spawn_pipes: no shell) and take one job per line.
--
-- Workloads (each job is built once per size, outside the timing):
--   quad  dG/deta of G = (1/T) log f(w_T) through T GD steps (lr 0.1) on the dense SPD quadratic
--         H = diag(1 + 9 i/(d-1)) + u u^T + v v^T, u_i = cos(0.7 (i+1))/sqrt(d),
--         v_i = sin(1.3 (i+1))/sqrt(d), from w0_i = cos(0.3 (i+1)) + 0.5, by every method
--         (reverse, forward, stable, exact, reverse with checkpoint = ceil(sqrt T)); PyTorch
--         runs reverse mode. d in {100, 1000} (and 4000 with --big), T in {100, 1000}.
--   ls    train-by-validation meta-training of GD's step size on least squares (as experiment 4,
--         meta = "valid"): a fixed number of meta-GD iterations on one task (X, Xv [2d, d] from an
--         integer hash, y = X w* + noise), reverse and stable against PyTorch's loop.
--   loop  T = 10000 GD steps at d = 10 on a tape driven from a Lua loop, against a Python loop
--         with autograd; time per step.
--   WORKLOADS below is the hook for more (the learned-optimizer inner step, once it exists).
local ms = require "metastep"
local core = ms.core

local USAGE = [[
usage: metastep scripts/bench/run.lua [options]
  --quick         small sizes, one round, no warm-up (seconds; what the tests run)
  --big           add the d = 4000 cases (minutes per round)
  --d LIST        run workload (1) at these sizes d only, comma-separated (e.g. --big --d 4000)
  --rounds N      rounds of every job (default 3; --quick: 1)
  --only LIST     workloads to run, comma-separated: quad, ls, loop (default all)
  --threads N     BLAS threads for every product (default: by size, ms.set_threads)
  --clock KIND    wall (default) or cpu: the process's CPU time, every thread counted
                  (steadier than wall time on a busy machine)
  --out FILE      the Markdown report (default bench-results.md)
  --python PATH   the Python that runs the PyTorch peer
  --floor PATH    the floor program (default: bench_floor beside the metastep executable)
  --help          this text]]

local function die(fmt, ...)
  io.stderr:write("run.lua: ", fmt:format(...), "\n", USAGE, "\n")
  os.exit(2)
end

local function parse(args)
  local o = {rounds = nil, out = "bench-results.md", only = {quad = true, ls = true, loop = true}}
  local i = 1
  local function value(name)
    i = i + 1
    if args[i] == nil then die("option %s needs a value", name) end
    return args[i]
  end
  local function count(name, lo)
    local s = value(name)
    local n = math.tointeger(tonumber(s))
    if n == nil or n < lo then die("option %s must be an integer >= %d, got '%s'", name, lo, s) end
    return n
  end
  while i <= #args do
    local a = args[i]
    if a == "--quick" then o.quick = true
    elseif a == "--big" then o.big = true
    elseif a == "--d" then
      o.dims = {}
      for w in value(a):gmatch("[^,]+") do
        local n = math.tointeger(tonumber(w))
        if n == nil or n < 1 then die("--d: expected sizes >= 1, got '%s'", w) end
        o.dims[n] = true
      end
    elseif a == "--rounds" then o.rounds = count(a, 1)
    elseif a == "--threads" then o.threads = count(a, 1)
    elseif a == "--out" then o.out = value(a)
    elseif a == "--clock" then
      o.clock = value(a)
      if o.clock ~= "wall" and o.clock ~= "cpu" then die("--clock: expected wall or cpu, got '%s'", o.clock) end
    elseif a == "--python" then o.python = value(a)
    elseif a == "--floor" then o.floor = value(a)
    elseif a == "--only" then
      o.only = {}
      for w in value(a):gmatch("[^,]+") do
        if w ~= "quad" and w ~= "ls" and w ~= "loop" then die("--only: unknown workload '%s'", w) end
        o.only[w] = true
      end
    elseif a == "--help" or a == "-h" then print(USAGE) os.exit(0)
    else die("unknown option '%s'", a) end
    i = i + 1
  end
  o.rounds = o.rounds or (o.quick and 1 or 3)
  o.clock = o.clock or "wall"
  o.warmup = not o.quick
  return o
end

local started = core.clock()
local opts = parse(arg or {})

-- The load average (Linux), to judge how busy the machine was: nil elsewhere.
local function loadavg()
  local f = io.open("/proc/loadavg")
  if not f then return nil end
  local s = f:read("l")
  f:close()
  return s and s:match("^(%S+ %S+ %S+)")
end
local load_start = loadavg()
if opts.threads then ms.set_threads(opts.threads) end

local SIZES = opts.quick and {
  quad = {{d = 20, T = 50}, {d = 60, T = 100}},
  ls = {d = 10, T = 20, iterations = 5},
  loop = {d = 10, T = 1000},
} or {
  quad = {{d = 100, T = 100}, {d = 100, T = 1000}, {d = 1000, T = 100}, {d = 1000, T = 1000}},
  ls = {d = 50, T = 40, iterations = 100},
  loop = {d = 10, T = 10000},
}
if opts.big and not opts.quick then
  table.insert(SIZES.quad, {d = 4000, T = 100})
  table.insert(SIZES.quad, {d = 4000, T = 1000})
end
if opts.dims then
  local keep = {}
  for _, c in ipairs(SIZES.quad) do
    if opts.dims[c.d] then keep[#keep + 1] = c end
  end
  if #keep == 0 then die("--d: none of these sizes is run (sizes: %s)", opts.quick and "20, 60" or
    (opts.big and "100, 1000, 4000" or "100, 1000 (--big: 4000)")) end
  SIZES.quad = keep
end
local LR, LOOP_LR, LS_LR, LS_META_LR = 0.1, 0.01, 0.01, 1e-4
local clock = opts.clock == "cpu" and os.clock or core.clock
local METHODS = {"reverse", "forward", "stable", "exact", "checkpoint"}

-- ---- problems (the formulas of peer_torch.py and bench_floor.c) ----

local problems = {}
local function quadratic(d)
  if problems.d ~= d then
    problems = {} -- one at a time: H is 128 MB at d = 4000
    collectgarbage()
    local i = ms.arange(1, d + 1)
    local lam = (i - 1) * (9 / math.max(d - 1, 1)) + 1
    local u = ms.cos(i * 0.7) / math.sqrt(d)
    local v = ms.sin(i * 1.3) / math.sqrt(d)
    local H = ms.diag(lam) + ms.outer(u, u) + ms.outer(v, v)
    problems = {d = d, H = H, w0 = ms.cos(i * 0.3) + 0.5, obj = ms.objective.quadratic(H)}
  end
  return problems
end

local function hashed(k, n)
  local t = {}
  for j = 0, n - 1 do t[j + 1] = ((k + j) * 2654435761 % 4294967296) / 4294967296 - 0.5 end
  return t
end

local function matrix(flat, n, d)
  local rows = {}
  for r = 1, n do rows[r] = table.move(flat, (r - 1) * d + 1, r * d, 1, {}) end
  return ms.tensor(rows)
end

local function least_squares(d)
  local n = 2 * d
  local X, Xv = matrix(hashed(0, n * d), n, d), matrix(hashed(n * d, n * d), n, d)
  local ws = {}
  for j = 0, d - 1 do ws[j + 1] = (j * 7919 % 13) / 13 - 0.5 end
  ws = ms.tensor(ws)
  local y = ms.matvec(X, ws) + ms.tensor(hashed(2 * n * d, n)) * 0.5
  local yv = ms.matvec(Xv, ws) + ms.tensor(hashed(2 * n * d + n, n)) * 0.5
  return {objective = ms.objective.least_squares(X, y), valid_objective = ms.objective.least_squares(Xv, yv)}
end

-- ---- the metastep side of each job: seconds, value, and the number compared ----

local function ms_quad(d, T, method)
  local p = quadratic(d)
  local spec = {objective = p.obj, w0 = p.w0, optimizer = ms.optim.gd{lr = LR}, steps = T, meta = "log",
                method = method}
  if method == "checkpoint" then
    spec.method, spec.checkpoint = "reverse", math.ceil(math.sqrt(T))
  end
  local t0 = clock()
  local r = ms.meta.value_and_grad(spec)
  local t = clock() - t0
  return t, r.value, r.grad.lr
end

local function ms_ls(c, method)
  local task = least_squares(c.d)
  local t0 = clock()
  local run = ms.meta.train{task = task, optimizer = ms.optim.gd{lr = LS_LR}, steps = c.T, meta = "valid",
                            method = method, iterations = c.iterations, meta_lr = LS_META_LR,
                            schedule = "constant", progress = false}
  local t = clock() - t0
  local last = run.history[#run.history]
  return t, last and last.value, run.theta.lr
end

local function ms_unroll(c)
  local p = quadratic(c.d)
  local t0 = clock()
  local r = ms.meta.value_and_grad{objective = p.obj, w0 = p.w0, optimizer = ms.optim.gd{lr = LOOP_LR},
                                   steps = c.T, meta = "log", method = "reverse"}
  return clock() - t0, r.value, r.grad.lr
end

local function ms_loop(c)
  local p = quadratic(c.d)
  local H, w = p.H, p.w0
  local t0 = clock()
  local tape <close> = core.ad_push("reverse")
  local eta = tape:watch(ms.tensor(LOOP_LR))
  for _ = 1, c.T do w = w - eta * ms.matvec(H, w) end
  local G = ms.log(ms.dot(w, ms.matvec(H, w)) * 0.5) / c.T
  tape:pop()
  local g = tape:gradient(G, {eta})
  local t = clock() - t0
  return t, G:item(), g[1]:item()
end

-- ---- workers: the peer and the floor, one job per line ----

local function script_dir()
  local s = arg and arg[0] or "scripts/bench/run.lua"
  return s:match("^(.*)/[^/]*$") or "."
end

local function start_worker(argv)
  local p, err = core.spawn_pipes(argv)
  if not p then return nil, err end
  return p
end

local function stop_worker(p)
  if not p then return end
  p.stdin:write("quit\n")
  p.stdin:close()
  p.stdout:close()
  core.wait(p.pid)
end

local function ask(p, line)
  local ok = p.stdin:write(line, "\n") and p.stdin:flush()
  local reply = ok and p.stdout:read("l")
  if not reply then return nil, "no answer (the process ended)" end
  local status, rest = reply:match("^(%S+)%s*(.*)$")
  if status ~= "ok" then return nil, rest or reply end
  local r = {}
  for k, v in rest:gmatch("(%w+)=(%S+)") do r[k] = tonumber(v) end
  return r
end

local peer, peer_note = nil, nil
do
  local candidates = opts.python and {opts.python} or {"/usr/bin/python3", "python3"}
  local why = {}
  for _, py in ipairs(candidates) do
    local p, err = start_worker{py, script_dir() .. "/peer_torch.py"}
    local first = p and p.stdout:read("l")
    if first and first:match("^ready") then
      peer, peer_note = p, "PyTorch " .. first:match("torch=(%S+)")
      break
    end
    why[#why + 1] = ("%s: %s"):format(py, err or (first and first:gsub("^notorch%s*", "")) or "no answer")
    if p then stop_worker(p) end
  end
  if not peer then
    peer_note = "PyTorch is not available (" .. table.concat(why, "; ") .. "): metastep alone"
  end
end

local floor, floor_note
do
  local path = opts.floor
  if not path then
    local exe = arg and arg[-1] or "metastep"
    path = (exe:match("^(.*)/[^/]*$") or ".") .. "/bench_floor"
    if not exe:find("/") then path = "bench_floor" end
  end
  local err
  floor, err = start_worker{path}
  if not floor then floor_note = "the floor program is not available (" .. err .. ")" end
end

-- ---- running ----

local times, numbers = {}, {} -- key -> list of seconds; key -> {value, x}
local function record(key, t, value, x)
  if t == nil then return end
  times[key] = times[key] or {}
  table.insert(times[key], t)
  numbers[key] = {value = value, x = x}
end

local function peer_job(key, line)
  if not peer then return end
  local r, err = ask(peer, line)
  if not r then
    io.stderr:write(("run.lua: PyTorch peer, job '%s': %s\n"):format(line, err))
    peer_note = (peer_note or "") .. "; failed on '" .. line .. "': " .. err
    return
  end
  return key, r.time, r.value, r.grad
end

local function threads_for(d)
  return core.threads(d * d)
end

local function floor_job(d, T)
  if not floor then return end
  local r, err = ask(floor, ("%d %d %d %d"):format(d, T, threads_for(d), opts.clock == "cpu" and 1 or 0))
  if not r then
    floor_note = "the floor failed at d = " .. d .. ": " .. err
    return
  end
  record(("floor/gemv/%d/%d"):format(d, T), r.gemv)
  record(("floor/symv/%d/%d"):format(d, T), r.symv)
end

local function progress(fmt, ...)
  io.stderr:write(fmt:format(...), "\n")
end

-- One entry per workload: run(round, keep) runs its jobs once, recording them when keep.
local WORKLOADS = {
  {name = "quad", run = function(keep)
    for _, c in ipairs(SIZES.quad) do
      local d, T = c.d, c.T
      progress("quad d = %d, T = %d", d, T)
      if keep then floor_job(d, T) end
      for _, m in ipairs(METHODS) do
        local t, v, g = ms_quad(d, T, m)
        if keep then record(("ms/quad/%d/%d/%s"):format(d, T, m), t, v, g) end
        if m == "reverse" then -- alternate: the peer right after metastep's reverse mode
          local key, pt, pv, pg = peer_job(("peer/quad/%d/%d"):format(d, T),
            ("quad d=%d T=%d lr=%.17g threads=%d clock=%s"):format(d, T, LR, threads_for(d), opts.clock))
          if keep and key then record(key, pt, pv, pg) end
        end
      end
    end
  end},
  {name = "ls", run = function(keep)
    local c = SIZES.ls
    progress("ls d = %d, T = %d, %d iterations", c.d, c.T, c.iterations)
    for _, m in ipairs{"reverse", "stable"} do
      local t, v, x = ms_ls(c, m)
      if keep then record("ms/ls/" .. m, t, v, x) end
      if m == "reverse" then
        local job = ("ls d=%d T=%d lr=%.17g meta_lr=%.17g iterations=%d threads=%d clock=%s")
          :format(c.d, c.T, LS_LR, LS_META_LR, c.iterations, threads_for(c.d), opts.clock)
        local key, pt, pv, px = peer_job("peer/ls", job)
        if keep and key then record(key, pt, pv, px) end
      end
    end
  end},
  {name = "loop", run = function(keep)
    local c = SIZES.loop
    progress("loop d = %d, T = %d", c.d, c.T)
    local t, v, g = ms_loop(c)
    if keep then record("ms/loop", t, v, g) end
    t, v, g = ms_unroll(c)
    if keep then record("ms/unroll", t, v, g) end
    local key, pt, pv, pg = peer_job("peer/loop",
      ("loop d=%d T=%d lr=%.17g threads=1 clock=%s"):format(c.d, c.T, LOOP_LR, opts.clock))
    if keep and key then record(key, pt, pv, pg) end
  end},
  -- (4) the learned-optimizer inner step: add {name = "l2l", run = function(keep) ... end} here,
  -- with its sizes in SIZES, a job in peer_torch.py, a section in the report and its targets.
}

for _, w in ipairs(WORKLOADS) do
  if opts.only[w.name] then
    if opts.warmup then w.run(false) end
    for r = 1, opts.rounds do
      progress("round %d of %d", r, opts.rounds)
      w.run(true)
    end
  end
end
stop_worker(peer)
stop_worker(floor)
local elapsed = core.clock() - started

-- ---- the report ----

local function stats(key)
  local ts = times[key]
  if not ts or #ts == 0 then return nil end
  local s = table.move(ts, 1, #ts, 1, {})
  table.sort(s)
  local n = #s
  local med = n % 2 == 1 and s[(n + 1) // 2] or (s[n // 2] + s[n // 2 + 1]) / 2
  return med, s[1]
end

local function fmt_t(s)
  if s == nil then return "—" end
  if s < 1e-3 then return ("%.3g µs"):format(s * 1e6) end
  if s < 1 then return ("%.3g ms"):format(s * 1e3) end
  return ("%.3g s"):format(s)
end

local function fmt_r(x)
  if x == nil then return "—" end
  return ("%.3gx"):format(x)
end

local function ratio(a, b)
  if a == nil or b == nil or b == 0 then return nil end
  return a / b
end

local function rel(a, b)
  if a == nil or b == nil then return nil end
  if a == b then return 0 end
  return math.abs(a - b) / math.max(math.abs(b), 1e-300)
end

local lines = {}
local function out(fmt, ...) lines[#lines + 1] = select("#", ...) > 0 and fmt:format(...) or fmt end

out("# metastep benchmark results")
out("")
out("Command: `metastep scripts/bench/run.lua %s` (%d round%s, %s time, medians and minimums over the rounds%s;"
    .. " total %.0f s).", table.concat(arg or {}, " "), opts.rounds, opts.rounds == 1 and "" or "s",
    opts.clock == "cpu" and "CPU" or "wall",
    opts.warmup and ", after one warm-up run of every job" or "", elapsed)
out("Peer: %s. Floor: %s. BLAS threads: %s (the same count for the peer and the floor at each size).",
    peer_note, floor_note or "CBLAS dgemv (all of H) and dsymv (one triangle), T products",
    opts.threads and ("%d for every product"):format(opts.threads) or "by size (one below 512 x 512, all cores above)")
out("Load average (1, 5, 15 min) at the start: %s; at the end: %s. Timings depend on the machine and its load:"
    .. " compare the ratios within one run.", load_start or "unknown", loadavg() or "unknown")

-- (1)
local agreement = {}
if opts.only.quad then
  out("")
  out("## (1) dG/dη through T GD steps on a dense SPD quadratic")
  out("")
  out("| d | T | method | metastep median | min | PyTorch reverse median | min | metastep/PyTorch |"
      .. " floor dgemv | floor dsymv | metastep/floor |")
  out("|---|---|---|---|---|---|---|---|---|---|---|")
  for _, c in ipairs(SIZES.quad) do
    local d, T = c.d, c.T
    local pm, pmin = stats(("peer/quad/%d/%d"):format(d, T))
    local fg = stats(("floor/gemv/%d/%d"):format(d, T))
    local fs = stats(("floor/symv/%d/%d"):format(d, T))
    local ref = numbers[("ms/quad/%d/%d/exact"):format(d, T)]
    local worst, worst_v = 0, 0
    for _, m in ipairs(METHODS) do
      local key = ("ms/quad/%d/%d/%s"):format(d, T, m)
      local med, mn = stats(key)
      out("| %d | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s |", d, T, m, fmt_t(med), fmt_t(mn),
          fmt_t(pm), fmt_t(pmin), fmt_r(ratio(med, pm)), fmt_t(fg), fmt_t(fs), fmt_r(ratio(med, fg)))
      local nb = numbers[key]
      if nb and ref then
        worst = math.max(worst, rel(nb.x, ref.x) or math.huge)
        worst_v = math.max(worst_v, rel(nb.value, ref.value) or math.huge)
      end
    end
    local pn = numbers[("peer/quad/%d/%d"):format(d, T)]
    agreement[#agreement + 1] = {d = d, T = T, grad = worst, value = worst_v,
                                 peer = pn and ref and math.max(rel(pn.x, ref.x), rel(pn.value, ref.value))}
  end
  out("")
  out("Agreement with the closed form (`exact`): the largest relative difference over the other methods")
  out("")
  out("| d | T | dG/dη | G | PyTorch (dG/dη and G) |")
  out("|---|---|---|---|---|")
  for _, a in ipairs(agreement) do
    out("| %d | %d | %.1e | %.1e | %s |", a.d, a.T, a.grad, a.value, a.peer and ("%.1e"):format(a.peer) or "—")
  end
end

-- (2)
if opts.only.ls then
  local c = SIZES.ls
  local pm, pmin = stats("peer/ls")
  local pn = numbers["peer/ls"]
  out("")
  out("## (2) Train-by-validation meta-training on least squares")
  out("")
  out("d = %d, n = %d training and %d validation samples, T = %d GD steps, %d meta-GD iterations"
      .. " (meta_lr %g) on the step size.", c.d, 2 * c.d, 2 * c.d, c.T, c.iterations, LS_META_LR)
  out("")
  out("| method | metastep median | min | PyTorch median | min | metastep/PyTorch | final lr | PyTorch's |")
  out("|---|---|---|---|---|---|---|---|")
  for _, m in ipairs{"reverse", "stable"} do
    local med, mn = stats("ms/ls/" .. m)
    local nb = numbers["ms/ls/" .. m]
    out("| %s | %s | %s | %s | %s | %s | %s | %s |", m, fmt_t(med), fmt_t(mn), fmt_t(pm), fmt_t(pmin),
        fmt_r(ratio(med, pm)), nb and ("%.15g"):format(nb.x) or "—", pn and ("%.15g"):format(pn.x) or "—")
  end
end

-- (3)
local loop_step, loop_ratio
if opts.only.loop then
  local c = SIZES.loop
  local med, mn = stats("ms/loop")
  local pm, pmin = stats("peer/loop")
  loop_step, loop_ratio = med and med / c.T, ratio(med, pm)
  out("")
  out("## (3) GD steps at d = %d on a tape, driven from a Lua loop (T = %d)", c.d, c.T)
  out("")
  out("| | median per step | min per step | total (median) |")
  out("|---|---|---|---|")
  out("| metastep (Lua loop) | %s | %s | %s |", fmt_t(med and med / c.T), fmt_t(mn and mn / c.T), fmt_t(med))
  out("| PyTorch (Python loop) | %s | %s | %s |", fmt_t(pm and pm / c.T), fmt_t(pmin and pmin / c.T), fmt_t(pm))
  local um, umin = stats("ms/unroll")
  out("| metastep (the engine's unroll, one ms.meta.value_and_grad call) | %s | %s | %s |",
      fmt_t(um and um / c.T), fmt_t(umin and umin / c.T), fmt_t(um))
  local a, b, u = numbers["ms/loop"], numbers["peer/loop"], numbers["ms/unroll"]
  out("")
  out("metastep (Lua loop)/PyTorch: %s; dG/dη of the Lua loop agrees with PyTorch's to %s and with the"
      .. " engine's unroll to %s.", fmt_r(loop_ratio), a and b and ("%.1e"):format(rel(a.x, b.x)) or "—",
      a and u and ("%.1e"):format(rel(a.x, u.x)) or "—")
end

out("")
out("## (4) Learned-optimizer inner step")
out("")
out("Not measured yet: the workload is a hook (WORKLOADS in scripts/bench/run.lua) for when it exists.")

-- targets
local function q(d, T, m) return stats(("ms/quad/%d/%d/%s"):format(d, T, m)) end
local function qp(d, T) return stats(("peer/quad/%d/%d"):format(d, T)) end
local function qf(d, T) return stats(("floor/gemv/%d/%d"):format(d, T)) end
local targets = {}
local function target(what, required, measured, pass)
  local verdict = measured == nil and "not run" or (pass and "PASS" or "MISS")
  targets[#targets + 1] = ("| %s | %s | %s | %s |"):format(what, required, measured or "—", verdict)
end
local function vs_floor(d, T, m, bound)
  local r = ratio(q(d, T, m), qf(d, T))
  target(("d = %d, T = %d: %s against the dgemv floor"):format(d, T, m), ("≤ %.2fx"):format(bound),
         r and fmt_r(r), r and r <= bound)
end
local function faster(d, T, m, factor)
  local r = ratio(qp(d, T), q(d, T, m))
  target(("d = %d, T = %d: %s faster than PyTorch reverse"):format(d, T, m), ("≥ %gx"):format(factor),
         r and fmt_r(r), r and r >= factor)
end
vs_floor(1000, 1000, "stable", 1.2)
vs_floor(1000, 1000, "forward", 1.2)
faster(1000, 1000, "stable", 2.5)
faster(1000, 1000, "forward", 2.5)
vs_floor(4000, 1000, "stable", 0.75)
faster(100, 1000, "stable", 15)
faster(100, 1000, "forward", 15)
faster(100, 1000, "reverse", 3)
faster(1000, 100, "reverse", 1)
faster(1000, 1000, "reverse", 1)
target("workload 3: time per step", "≤ 3 µs", loop_step and fmt_t(loop_step), loop_step and loop_step <= 3e-6)
target("workload 3: faster than PyTorch", "≥ 10x", loop_ratio and fmt_r(1 / loop_ratio),
       loop_ratio and 1 / loop_ratio >= 10)
local worst
for _, a in ipairs(agreement) do worst = math.max(worst or 0, a.grad, a.value) end
target("every method agrees with exact (relative)", "≤ 1e-10", worst and ("%.1e"):format(worst),
       worst and worst <= 1e-10)
out("")
out("## Targets (issue 12)")
out("")
out("| target | required | measured (medians) | verdict |")
out("|---|---|---|---|")
for _, t in ipairs(targets) do out(t) end

local text = table.concat(lines, "\n") .. "\n"
io.write(text)
local f, err = io.open(opts.out, "w")
if not f then
  io.stderr:write("run.lua: cannot write the report: ", err, "\n")
  os.exit(1)
end
f:write(text)
f:close()
io.stderr:write("run.lua: wrote ", opts.out, "\n")
