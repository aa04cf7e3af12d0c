-- A seeded random fuzzer of metastep's whole public Lua surface: every function of `ms` and
-- of its submodules (except plotting, which runs gnuplot and writes files), every Tensor and
-- Objective method and the tensor operators, called with random argument lists: numbers
-- (0, huge, negative, NaN, inf), strings, shapes, nested tables, option tables with known and
-- misspelled keys, near-valid meta specs, tensors (empty, 0-d, huge-shaped, non-finite,
-- transposed, expanded, released), objectives, optimizers, cyclic tables, proxies whose
-- __len lies, and callbacks that raise or return nonsense.
--
-- Each call is generated as one line of Lua (`ms.cat({ms.zeros{0, 3}, 0/0}, -1)`) and run
-- under pcall with a time and Lua-memory guard (a count hook) and the engine's memory
-- budget. Before each call the line is written to the "last call" file, so a crash (the
-- process dying, a sanitizer report) leaves its reproducer behind. Errors are classified:
--   caller    the message is blamed on the calling line (what a user should see)
--   library   blamed on a line inside the library (metastep/*.lua) or not positioned
--   raw       a raw Lua error ("attempt to index a nil value", "bad 'for' limit", ...)
--   callback  an error raised by one of the fuzzer's own callbacks, passed through
--   guard     stopped by the fuzzer's time or memory guard
-- Unexpected outcomes (a non-string error object, an empty message, a Lua memory runaway
-- past the guard) are written with their reproducer and make the run fail (exit status 1).
--
-- Usage: metastep tests/fuzz/fuzz.lua [--calls N] [--seed S] [--only K] [--out DIR]
--        [--max-raw P] [--max-library P] [--verbose]
--   --only K replays call K of seed S alone (after generating, not running, calls 1..K-1);
--   --max-raw / --max-library fail the run when that class exceeds P percent of the errors.
-- Run it from a scratch directory: option tables may name files (meta.train's log).
local ms = require "metastep"
local core = require "metastep.core"

-- ------------------------------------------------------------------ arguments

local opts = {calls = 10000, seed = 1, out = ".", only = nil, verbose = false,
              max_raw = nil, max_library = nil}
do
  local i = 1
  while i <= #arg do
    local a = arg[i]
    local function val()
      i = i + 1
      if arg[i] == nil then error("fuzz: " .. a .. " needs a value", 0) end
      return arg[i]
    end
    if a == "--calls" then opts.calls = math.tointeger(tonumber(val()))
    elseif a == "--seed" then opts.seed = math.tointeger(tonumber(val()))
    elseif a == "--only" then opts.only = math.tointeger(tonumber(val()))
    elseif a == "--out" then opts.out = val()
    elseif a == "--max-raw" then opts.max_raw = tonumber(val())
    elseif a == "--max-library" then opts.max_library = tonumber(val())
    elseif a == "--verbose" then opts.verbose = true
    else error("fuzz: unknown argument '" .. tostring(a) .. "'", 0) end
    i = i + 1
  end
  if not opts.calls or opts.calls < 0 then error("fuzz: --calls needs an integer >= 0", 0) end
  if not opts.seed then error("fuzz: --seed needs an integer", 0) end
end

local BUDGET = 64 << 20        -- engine bytes per call
local LUA_LIMIT_KB = 256 << 10 -- Lua heap growth per call (KB) before the guard stops it
local TIME_LIMIT = 2.0         -- CPU seconds per call before the guard stops it

-- ------------------------------------------------------------------ the environment of a call

-- Helpers a generated line may call; the reproducer names them, so they are part of the
-- fuzzer's stable interface (see the prelude printed with each reproducer).
local env = {ms = ms, core = core, math = math}

function env.released()
  local x
  do
    local y <close> = ms.zeros(2)
    x = y
  end
  return x
end

function env.cyclic(depth)
  local t = {ms.tensor{1, 2}}
  local cur = t
  for _ = 2, depth or 1 do
    local n = {ms.ones(2)}
    cur[2] = n
    cur = n
  end
  cur[#cur + 1] = t
  return t
end

function env.proxy(n, v)
  return setmetatable({}, {__len = function() return n end, __index = function() return v end})
end

function env.raiser(msg) return function() error("fuzz-callback: " .. msg) end end
function env.raise_table() return function() error({"fuzz-callback table"}) end end
function env.const(v) return function() return v end end
function env.ident() return function(...) return ... end end
function env.sq() return function(x) return (x * x):sum() end end

-- ------------------------------------------------------------------ the generator

local rng_state -- the fuzzer's own generator (xorshift64*), independent of math.random

local function rnd(n) -- integer in 1..n
  local x = rng_state
  x = x ~ (x << 13)
  x = x ~ (x >> 7)
  x = x ~ (x << 17)
  rng_state = x
  return (x >> 1) % n + 1
end

local function pick(list) return list[rnd(#list)] end

local NUMBERS = {"0", "1", "2", "3", "-1", "-3", "0.5", "1.5", "-0.0", "1e-300", "1e300", "-1e300",
                 "math.huge", "-math.huge", "0/0", "math.maxinteger", "math.mininteger",
                 "(1 << 40)", "(1 << 62)", "-(1 << 40)", "2^53", "1e-8", "0.1", "10", "100"}
local SMALL = {"0", "1", "2", "3", "-1", "0.5", "1.5", "0/0", "math.huge", "-2", "4", "5"}
local STRINGS = {"'x'", "''", "'3'", "'log'", "'naive'", "'reverse'", "'forward'", "'stable'",
                 "'exact'", "'fd'", "'train'", "'valid'", "'gd'", "'adam'", "'lr'", "'sum'",
                 "'inv_sqrt'", "'skip'", "'float'", "'%s%n'", "'\\0'"}
-- option keys the library knows, plus near misses
local KEYS = {"lr", "steps", "meta", "method", "iterations", "meta_lr", "clip", "seed", "lo", "hi",
              "mean", "std", "d", "eigenvalues", "objective", "optimizer", "w0", "batch", "beta",
              "eps", "log_lr", "schedule", "params", "fd_step", "freeze_norm", "tasks", "task",
              "n_train", "n_valid", "n_test", "sigma", "nesterov", "name", "init", "step",
              "forward", "vjp", "jvp", "nin", "argnums", "truncate", "theta", "rho", "beta1",
              "beta2", "bounds", "on_failure", "sample", "callback", "meta_optimizer",
              "keep_iterates", "allow_zero_loss", "wstar", "fstar", "value", "grad", "hvp",
              "dim", "nstate", "select", "stpes", "lrr", "iteratons", "rtol", "atol", "eps_fd"}
local SHAPE_SIZES = {"0", "1", "2", "3", "-1", "(1 << 40)", "(1 << 62)", "1.5", "'a'", "0/0"}

local value -- forward: value(depth) -> expression string

local function shape_expr()
  local n = rnd(4) - 1
  local parts = {}
  for i = 1, n do parts[i] = rnd(4) == 1 and pick(SHAPE_SIZES) or pick{"0", "1", "2", "3"} end
  return "{" .. table.concat(parts, ", ") .. "}"
end

local function tensor_expr()
  local k = rnd(16)
  if k == 1 then return "ms.tensor(" .. pick(SMALL) .. ")" end
  if k == 2 then return "ms.zeros" .. shape_expr() end
  if k == 3 then return "ms.ones(" .. pick{"0", "1", "2", "3"} .. ", " .. pick{"0", "1", "2", "3"} .. ")" end
  if k == 4 then return "ms.tensor{{1, 2}, {3, 4}}" end
  if k == 5 then return "ms.tensor{{4, 1, 0}, {1, 3, 1}, {0, 1, 2}}" end
  if k == 6 then return "ms.tensor{0/0, math.huge, -math.huge}" end
  if k == 7 then return "ms.arange(6):view(2, 3)" end
  if k == 8 then return "ms.arange(6):view(2, 3):t()" end
  if k == 9 then return "ms.tensor{{1, 2, 3}}:expand{" .. pick{"2", "4", "1"} .. ", 3}" end
  if k == 10 then return "released()" end
  if k == 11 then return "ms.zeros{0, " .. pick{"3", "(1 << 40)", "(1 << 49)"} .. "}" end
  if k == 12 then return "ms.randn({" .. pick{"2", "3", "5"} .. "}, {seed = " .. rnd(9) .. "})" end
  if k == 13 then return "ms.arange(24):view(2, 3, 4)" end
  if k == 14 then return "ms.eye(" .. pick{"1", "2", "3"} .. ")" end
  if k == 15 then return "ms.tensor{1, -2}" end
  return "ms.arange(10):slice(1, 1, 10, 3)"
end

local function callback_expr()
  return pick{"raiser('boom')", "raise_table()", "const(nil)", "const(1)", "const('x')",
              "const(ms.ones(2))", "const(ms.tensor(1))", "ident()", "sq()", "print",
              "function(x) return x end", "function() return {} end"}
end

local function objective_expr()
  return pick{"ms.objective.quadratic(ms.tensor{{2, 0}, {0, 1}})",
              "ms.objective.quadratic(ms.tensor{{1, 0}, {0, -1}})",
              "ms.objective.least_squares(ms.ones(3, 2), ms.tensor{1, 2, 3})",
              "ms.objective.logistic(ms.tensor{{1, 0}, {0, 1}, {1, 1}}, ms.tensor{0, 1, 1})",
              "ms.objective.random_quadratic{d = 2, seed = 1}",
              "ms.objective.from_function(" .. callback_expr() .. ", {dim = 2})"}
end

local function optimizer_expr()
  local o = pick{"gd", "sgd", "momentum", "nesterov", "rmsprop", "adam"}
  local lr = rnd(4) == 1 and pick(NUMBERS) or "0.1"
  return ("ms.optim.%s{lr = %s}"):format(o, lr)
end

-- A table of random key = value pairs (keys from KEYS).
local function options_expr(depth)
  local parts = {}
  for i = 1, rnd(4) - 1 do parts[i] = pick(KEYS) .. " = " .. value(depth + 1) end
  return "{" .. table.concat(parts, ", ") .. "}"
end

-- A valid meta spec with a few fields perturbed: reaches past the first check.
local BIG_KEYS = {steps = true, iterations = true, batch = true, d = true, n_train = true,
                  n_valid = true, n_test = true, truncate = true}
local function spec_expr(depth)
  local fields = {
    objective = "ms.objective.quadratic(ms.tensor{{2, 0}, {0, 1}})",
    optimizer = optimizer_expr(), w0 = "ms.tensor{1, 1}", steps = pick{"1", "3", "5"},
    meta = pick{"'log'", "'naive'", "'sum'", "'logsum'", "'train'", "'valid'"},
    method = pick{"'reverse'", "'forward'", "'stable'", "'exact'", "'fd'"},
  }
  local order = {"objective", "optimizer", "w0", "steps", "meta", "method"}
  if rnd(2) == 1 then
    fields.iterations, fields.meta_lr = pick{"1", "2"}, "0.01"
    order[#order + 1], order[#order + 2] = "iterations", "meta_lr"
  end
  for _ = 1, rnd(3) - 1 do
    local k = pick(KEYS)
    local v = BIG_KEYS[k] and pick(SMALL) or value(depth + 1)
    if fields[k] == nil then order[#order + 1] = k end
    fields[k] = v
  end
  local parts = {}
  for _, k in ipairs(order) do parts[#parts + 1] = k .. " = " .. fields[k] end
  return "{" .. table.concat(parts, ", ") .. "}"
end

-- Plausible arguments (small sizes and axes, ordinary tensors) half the time at the top
-- level, so calls get past the first check and reach the engine.
local PLAUSIBLE = {"1", "2", "-1", "0.5", "nil", "true", "{2}", "{1, 2}"}

function value(depth)
  depth = depth or 0
  if depth == 0 and rnd(2) == 1 then return rnd(3) == 1 and tensor_expr() or pick(PLAUSIBLE) end
  local k = rnd(depth > 1 and 8 or 20)
  if k <= 3 then return pick(NUMBERS) end
  if k <= 5 then return tensor_expr() end
  if k == 6 then return pick(STRINGS) end
  if k == 7 then return pick{"nil", "true", "false"} end
  if k == 8 then return shape_expr() end
  if k == 9 then return options_expr(depth) end
  if k == 10 then return callback_expr() end
  if k == 11 then return "{" .. tensor_expr() .. ", " .. tensor_expr() .. "}" end
  if k == 12 then return pick{"cyclic(1)", "cyclic(3)"} end
  if k == 13 then return "proxy(" .. pick{"2", "-1", "(1 << 32) + 1", "(1 << 62)"} .. ", " .. pick(SMALL) .. ")" end
  if k == 14 then return objective_expr() end
  if k == 15 then return optimizer_expr() end
  if k == 16 then return spec_expr(depth) end
  if k == 17 then return pick{"{{1, 2}, {3}}", "{{1, 2}, {3, 4}}", "{1, 'a'}", "{}"} end
  if k == 18 then return pick{"io.stdout", "coroutine.create(print)", "ms.Tensor"} end
  if k == 19 then return "{" .. value(depth + 1) .. "}" end
  return pick(SMALL)
end
env.io, env.coroutine, env.print = io, coroutine, function() end

-- ------------------------------------------------------------------ the surface

local SKIP = {plot = true, help = true, help_text = true, core = true, set_memory_limit = true,
              Tensor_mt = true, Objective_mt = true}
local targets = {}
local function add_module(path, t)
  local names = {}
  for k, v in pairs(t) do
    if type(k) == "string" and not SKIP[k] then names[#names + 1] = k end
    local _ = v
  end
  table.sort(names)
  for _, k in ipairs(names) do
    local v = t[k]
    if type(v) == "function" then targets[#targets + 1] = {kind = "fn", name = path .. "." .. k}
    elseif type(v) == "table" and path == "ms" and k ~= "Tensor" and k ~= "Objective" then
      add_module(path .. "." .. k, v)
    end
  end
end
add_module("ms", ms)
local tensor_methods = {}
for k in pairs(ms.Tensor) do tensor_methods[#tensor_methods + 1] = k end
table.sort(tensor_methods)
for _, m in ipairs(tensor_methods) do targets[#targets + 1] = {kind = "tmethod", name = m} end
local obj_methods = {}
for k in pairs(getmetatable(ms.objective.quadratic(ms.eye(1))).__index) do obj_methods[#obj_methods + 1] = k end
table.sort(obj_methods)
for _, m in ipairs(obj_methods) do targets[#targets + 1] = {kind = "omethod", name = m} end
local OPERATORS = {"%s + %s", "%s - %s", "%s * %s", "%s / %s", "%s ^ %s", "%s < %s", "%s <= %s",
                   "%s .. %s", "%s == %s"}
for _, o in ipairs(OPERATORS) do targets[#targets + 1] = {kind = "op", name = o} end
-- the receiver of these is the tensor
for _, o in ipairs{"-%s", "#%s", "tostring(%s)", "%s[%s]"} do targets[#targets + 1] = {kind = "op1", name = o} end
targets[#targets + 1] = {kind = "newindex", name = "%s[%s] = %s"}

-- One call as a line of Lua.
local function generate()
  local t = targets[rnd(#targets)]
  local args = {}
  local n = rnd(5) - 1
  for i = 1, n do args[i] = value(0) end
  if t.kind == "fn" then
    -- meta functions get a near-valid spec most of the time
    if t.name:find("^ms%.meta%.") and rnd(3) > 1 then args[1] = spec_expr(0) end
    return ("local r = %s(%s) return r"):format(t.name, table.concat(args, ", "))
  elseif t.kind == "tmethod" then
    return ("local r = (%s):%s(%s) return r"):format(tensor_expr(), t.name, table.concat(args, ", "))
  elseif t.kind == "omethod" then
    return ("local r = (%s):%s(%s) return r"):format(objective_expr(), t.name, table.concat(args, ", "))
  elseif t.kind == "op" or t.kind == "op1" then
    -- one operand at least is a tensor: `{} + 1` is Lua's own business
    local a, b = tensor_expr(), value(0)
    if t.kind == "op" and rnd(2) == 1 then a, b = b, a end
    return ("local r = " .. t.name .. " return r"):format("(" .. a .. ")", "(" .. b .. ")")
  end
  return ("local t = %s t[%s] = %s"):format(tensor_expr(), value(1), value(1))
end

-- ------------------------------------------------------------------ running and classifying

local RAW = {"attempt to ", "bad 'for'", "table index is ", "invalid key to 'next'",
             "stack overflow", "string length overflow", "wrong number of arguments",
             "'__index' chain too long", "C stack overflow", "number has no integer representation",
             "invalid value %(at index", "object length is not an integer"}

local function classify(err)
  if type(err) ~= "string" then
    if type(err) == "table" and err[1] == "fuzz-callback table" then return "callback" end
    return "unexpected", "non-string error object (" .. type(err) .. ")"
  end
  if err == "" then return "unexpected", "empty error message" end
  if err:find("fuzz-guard:", 1, true) then return "guard" end
  if err:find("fuzz-callback", 1, true) then return "callback" end
  -- raised inside a callback the fuzzer wrote (sq() given a number): the user's code
  if err:find("^[^\n]*tests/fuzz/fuzz%.lua:%d+:") then return "callback" end
  local pos, msg = err:match("^([^\n]-:%d+): (.*)$")
  local body = msg or err
  local at_caller = pos and pos:find("^call:1$")
  if not body:find("^bad argument") then
    for _, p in ipairs(RAW) do
      if body:find(p) then
        -- the VM's own message for an operator the generated line applied to a value that
        -- has no such metamethod (`t .. t`, `#f`): Lua's behaviour, blamed on the caller
        if at_caller and body:find("^attempt to [%a ]+ an? [%w*]+ value") then return "lua" end
        return "raw"
      end
    end
  end
  if body:find("^not enough memory") then return "memory" end
  if at_caller then return "caller" end
  return "library"
end

local function write_file(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

local PRELUDE = "tests/fuzz/fuzz.lua defines released(), cyclic(n), proxy(n, v), raiser(msg), "
  .. "raise_table(), const(v), ident(), sq()"

local function reproducer(seed, index, line, what)
  return ("-- %s\n-- seed %d, call %d; replay: build/metastep tests/fuzz/fuzz.lua --seed %d --only %d\n"
    .. "-- (%s)\n%s\n"):format(what, seed, index, seed, index, PRELUDE, line)
end

local counts = {caller = 0, library = 0, raw = 0, lua = 0, callback = 0, guard = 0, memory = 0,
                unexpected = 0, ok = 0}
local samples = {library = {}, raw = {}, guard = {}, memory = {}, lua = {}}
local unexpected = {}

-- The guard: a count hook that stops a call past its CPU time or Lua heap growth.
local call_start, heap_start
local function guard()
  if os.clock() - call_start > TIME_LIMIT then error("fuzz-guard: time limit", 2) end
  if collectgarbage("count") - heap_start > LUA_LIMIT_KB then
    collectgarbage()
    if collectgarbage("count") - heap_start > LUA_LIMIT_KB then error("fuzz-guard: Lua memory", 2) end
  end
end

local last_call = opts.out .. "/fuzz_last_call.lua"
local report = opts.out .. "/fuzz_report.txt"

-- The last-call file stays open and is rewritten in place before every call (padded with
-- blanks over a longer previous text): one write and flush per call, no open/close.
local last_file = assert(io.open(last_call, "w"))
local last_len = 0
local function write_last(text)
  last_file:seek("set", 0)
  last_file:write(text, string.rep(" ", last_len - #text))
  last_file:flush()
  last_len = math.max(last_len, #text)
end

local function run_one(index, line)
  write_last(reproducer(opts.seed, index, line, "the call running when the process died"))
  local chunk, cerr = load(line, "=call", "t", setmetatable({}, {__index = function(_, k)
    local v = env[k]
    if v == nil then v = _G[k] end
    return v
  end}))
  if not chunk then -- the generator's own bug: reported like any unexpected outcome
    counts.unexpected = counts.unexpected + 1
    unexpected[#unexpected + 1] = reproducer(opts.seed, index, line, "does not compile: " .. cerr)
    return
  end
  ms.set_memory_limit(BUDGET)
  if index % 256 == 0 then collectgarbage() end
  call_start, heap_start = os.clock(), collectgarbage("count")
  debug.sethook(guard, "", 1000)
  local ok, err = pcall(chunk)
  debug.sethook()
  local class, why = "ok", nil
  if not ok then class, why = classify(err) end
  local shown = tostring(err)
  -- leave no state behind for the next call: levels left pushed (dropped, so collected)
  ok, err, chunk = nil, nil, nil -- luacheck: ignore 311 (drops the references to the results)
  if core.ad_depth() > 0 then collectgarbage() collectgarbage() end
  ms.set_memory_limit(BUDGET)
  if ms.set_check_numerics then ms.set_check_numerics(false) end -- (older builds lack it)
  counts[class] = counts[class] + 1
  if opts.verbose then io.stderr:write(index, " ", class, " ", line, "\n  -> ", shown, "\n") end
  if class == "unexpected" then
    unexpected[#unexpected + 1] = reproducer(opts.seed, index, line, why .. ": " .. shown)
  elseif samples[class] and #samples[class] < 40 then
    table.insert(samples[class], ("call %d: %s\n  -> %s"):format(index, line, shown))
  end
  if core.ad_depth() > 0 then
    unexpected[#unexpected + 1] = reproducer(opts.seed, index, line,
      ("left %d autodiff levels pushed after collection"):format(core.ad_depth()))
    counts.unexpected = counts.unexpected + 1
  end
end

rng_state = (opts.seed * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) | 1
for _ = 1, 8 do rnd(2) end
local t0 = os.clock()
for i = 1, opts.calls do
  local line = generate()
  if opts.only == nil or opts.only == i then
    if opts.only then io.stderr:write(line, "\n") end
    run_one(i, line)
  end
  if opts.only == i then break end
end
ms.set_memory_limit(0)
last_file:close()
os.remove(last_call)

local errors = counts.caller + counts.library + counts.raw
local function pct(n) return errors > 0 and 100 * n / errors or 0 end
local lines = {
  ("fuzz: seed %d, %d calls in %.1f s CPU"):format(opts.seed, opts.only and 1 or opts.calls, os.clock() - t0),
  ("  returned %d; errors %d: caller-blamed %d (%.1f%%), library-blamed %d (%.1f%%), raw %d (%.1f%%)")
    :format(counts.ok, errors, counts.caller, pct(counts.caller), counts.library, pct(counts.library),
            counts.raw, pct(counts.raw)),
  ("  Lua's own operator errors at the caller's line %d, callback errors passed through %d,")
    :format(counts.lua, counts.callback),
  ("  stopped by the guard %d, out of Lua memory %d, unexpected %d")
    :format(counts.guard, counts.memory, counts.unexpected),
}
local text = table.concat(lines, "\n") .. "\n"
for _, class in ipairs{"raw", "library", "guard", "memory", "lua"} do
  if #samples[class] > 0 then
    text = text .. "\n== " .. class .. " (first " .. #samples[class] .. ")\n"
      .. table.concat(samples[class], "\n") .. "\n"
  end
end
for i, r in ipairs(unexpected) do
  text = text .. "\n== unexpected " .. i .. "\n" .. r
  write_file(opts.out .. ("/fuzz_repro_%d_%d.lua"):format(opts.seed, i), r)
end
write_file(report, text)
io.stderr:write(table.concat(lines, "\n"), "\n")
if #unexpected > 0 then io.stderr:write("fuzz: unexpected outcomes; reproducers in ", report, "\n") end

local failed = #unexpected > 0
if opts.max_raw and pct(counts.raw) > opts.max_raw then
  io.stderr:write(("fuzz: raw errors %.1f%% > %g%%\n"):format(pct(counts.raw), opts.max_raw))
  failed = true
end
if opts.max_library and pct(counts.library) > opts.max_library then
  io.stderr:write(("fuzz: library-blamed errors %.1f%% > %g%%\n"):format(pct(counts.library), opts.max_library))
  failed = true
end
os.exit(failed and 1 or 0)
