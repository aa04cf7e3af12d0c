-- ms.save / ms.load (docs/format.md) and meta.train checkpoints: bit-for-bit round trips,
-- refusals with their messages, and damaged checkpoints refused with the state untouched.
local ms = require "metastep"
local h = dofile((debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "tests/lua") .. "/helpers.lua")

local function bits(x) return string.pack("<d", x) end
local function from_bits(u) return (string.unpack("<d", string.pack("<I8", u))) end

local function starts(s, prefix, what)
  assert.are.equal(prefix, s:sub(1, #prefix), what)
end

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local function write(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

-- Equal bit for bit: numbers by their bits and subtype, tensors by shape and element bits.
local function same(a, b, where)
  where = where or "value"
  assert.are.equal(type(a), type(b), where .. ": type")
  if type(a) == "number" then
    assert.are.equal(math.type(a), math.type(b), where .. ": subtype")
    assert.are.equal(bits(a), bits(b), where .. ": bits")
  elseif ms.is_tensor(a) then
    assert.is_true(ms.is_tensor(b), where)
    assert.are.same(a:shape(), b:shape(), where .. ": shape")
    local ta, tb = a:reshape(a:numel()):totable(), b:reshape(b:numel()):totable()
    for i = 1, #ta do assert.are.equal(bits(ta[i]), bits(tb[i]), where .. "[" .. i .. "]") end
  elseif type(a) == "table" then
    for k, v in pairs(a) do same(v, b[k], where .. "." .. tostring(k)) end
    for k in pairs(b) do assert.is_not_nil(a[k], where .. ": extra key " .. tostring(k)) end
  else
    assert.are.equal(a, b, where)
  end
end

-- Scratch files from os.tmpname (no shell involved), removed at the end.
local made = {}
local function tmp()
  local p = os.tmpname()
  made[#made + 1] = p
  return p
end
teardown(function()
  for _, p in ipairs(made) do os.remove(p) end
end)

describe("ms.save / ms.load", function()
  it("round-trip every kind of value bit for bit", function()
    local payload = from_bits(0x7ff8000000000123)
    local v = {
      int = 3, float = 3.0, negzero = -0.0, inf = math.huge, nan = payload, big = math.mininteger,
      str = "a\0b\255", empty_str = "", yes = true, no = false,
      t = ms.tensor{{payload, -0.0}, {math.huge, -math.huge}, {5e-324, 1.7976931348623157e308}},
      view = ms.tensor{{1, 2, 3}, {4, 5, 6}}:transpose(1, 2), scalar = ms.tensor(-0.0),
      list = {1, 2.5, {}, {x = {y = {}}}},
      ["a/b"] = 1, ["#1"] = 2, [""] = 3, ["%"] = 4, ["%2F"] = 5, [-7] = 6, [math.maxinteger] = 7,
    }
    local p = tmp()
    assert.is_true(ms.save(p, v))
    same(v, ms.load(p))
  end)

  it("save a value that is not a table on its own", function()
    local p = tmp()
    for _, v in ipairs{ms.randn{3, 2}, 0.1, 7, "text", false} do
      assert.is_true(ms.save(p, v))
      same(v, ms.load(p))
    end
  end)

  it("keep an optimizer's state and a meta-training result", function()
    local res = ms.meta.train{objective = ms.objective.quadratic(ms.tensor{{2, 0}, {0, 1}}), w0 = ms.tensor{1, 1},
                              optimizer = ms.optim.adam{lr = 0.1}, steps = 5, iterations = 3,
                              meta_optimizer = "adam", progress = false}
    local state = {theta = res.theta, history = res.history, best_theta = res.best_theta,
                   best_value = res.best_value, best_k = res.best_k, stopped = res.stopped,
                   adam = {m = ms.randn{4}, v = ms.rand{4}, t = 12}}
    local p = tmp()
    assert.is_true(ms.save(p, state))
    same(state, ms.load(p))
  end)

  it("refuse values that cannot be stored, naming where", function()
    local p = tmp()
    os.remove(p)
    assert.are.equal("ms.save: the value at 'f' is a function (expected a tensor, number, string, boolean or "
                     .. "table of these)", h.err_of(ms.save, p, {f = print}))
    local cyc = {a = {}}
    cyc.a.b = cyc
    assert.are.equal("ms.save: cyclic table at 'a/b' (it contains itself)", h.err_of(ms.save, p, cyc))
    assert.are.equal("ms.save: key 1.5 at '' is not an integer (keys must be strings or integers)",
                     h.err_of(ms.save, p, {[1.5] = 1}))
    assert.are.equal("ms.save: a boolean key at 'x' (keys must be strings or integers)",
                     h.err_of(ms.save, p, {x = {[true] = 1}}))
    assert.are.equal("ms.save: the table at 'm' has a metatable (only plain tables are saved)",
                     h.err_of(ms.save, p, {m = setmetatable({}, {})}))
    assert.are.equal("ms.save: the tensor at 'w' has been released", h.err_of(ms.save, p, {w = h.released()}))
    -- (Lua names the function by where it finds it: 'metastep.save' or 'metastep.core.save')
    assert.is_truthy(h.err_of(ms.save, p, nil):find("^bad argument #2 to '[%w.]*save' %(a value to save expected, got nil%)$"))
    assert.is_nil(io.open(p)) -- nothing written
  end)

  it("never crash on odd values (the fuzzer's part for save, into a scratch file)", function()
    local p = tmp()
    local nan = 0 / 0
    local deep = {}
    for _ = 1, 150 do deep = {deep} end
    local odd = {false, true, 0, -0.0, nan, math.huge, math.mininteger, "", "x\0", {}, {{}}, {1, nil, 3},
                 {[0] = 1}, {[-1] = {}}, {[2 ^ 53] = 1}, {[nan ~= nan and 1.5 or 0] = 1}, ms.zeros{0, 3},
                 ms.zeros{2, 1}:expand{2, 3}, ms.tensor(nan), h.released(), deep, coroutine.create(print),
                 io.stdout, {x = io.stdout}, setmetatable({}, {__pairs = error}), {[{}] = 1}}
    for i, v in ipairs(odd) do
      local ok, r, msg = pcall(ms.save, p, v)
      assert.is_true(ok and r == true or (ok and r == nil and type(msg) == "string") or
                     (not ok and type(r) == "string"), tostring(i))
      if ok and r then same(v, ms.load(p), tostring(i)) end
    end
  end)

  it("return nil and a message when the file cannot be written or read", function()
    local dir = tmp()
    local r, msg = ms.save(dir .. "/no/such/x.msa", 1)
    assert.is_nil(r)
    starts(msg, "ms.save: '" .. dir .. "/no/such/x.msa': cannot create")
    r, msg = ms.load(dir .. ".missing")
    assert.is_nil(r)
    assert.are.equal("ms.load: cannot open '" .. dir .. ".missing': No such file or directory", msg)
  end)

  it("refuse every truncation and every flipped bit of a file, with the path and the reason", function()
    local p, q = tmp(), tmp()
    assert.is_true(ms.save(p, {w = ms.tensor{1, 2}, lr = 0.5, name = "x"}))
    local s = read(p)
    local reasons = {"truncated", "bad magic", "checksum mismatch", "format version", "trailing data"}
    local function refused(what)
      local r, msg = ms.load(q)
      assert.is_nil(r, what)
      starts(msg, "ms.load: '" .. q .. "': ", what)
      local known = false
      for _, k in ipairs(reasons) do known = known or msg:find(k, 1, true) ~= nil end
      assert.is_true(known, what .. ": " .. msg)
    end
    for len = 0, #s - 1 do
      write(q, s:sub(1, len))
      refused("truncated to " .. len)
    end
    for i = 1, #s do
      for b = 0, 7 do
        write(q, s:sub(1, i - 1) .. string.char(s:byte(i) ~ (1 << b)) .. s:sub(i + 1))
        refused(("bit %d of byte %d"):format(b, i))
      end
    end
    write(q, s:sub(1, 40) .. string.char(s:byte(41) ~ 4) .. s:sub(42))
    local _, msg = ms.load(q)
    assert.is_truthy(msg:find("checksum mismatch (stored 0x", 1, true))
  end)
end)

describe("ms.tasks samplers", function()
  it("report and set their position", function()
    local a = ms.tasks.quadratic{d = 2, eigenvalues = {1, 2}, seed = 3}
    local b = ms.tasks.quadratic{d = 2, eigenvalues = {1, 2}, seed = 3}
    assert.are.equal(0, ms.tasks.position(a))
    a(); a()
    local third = a()
    assert.are.equal(3, ms.tasks.position(a))
    ms.tasks.set_position(b, 2)
    same(third.w0, b().w0)
    assert.is_nil(ms.tasks.position(print))
    assert.are.equal("tasks.set_position: not a sampler made by ms.tasks", h.err_of(ms.tasks.set_position, print, 1))
  end)
end)

describe("meta.train checkpoints", function()
  local function opts(extra)
    local o = {sample = ms.tasks.quadratic{d = 3, eigenvalues = {1, 4}, seed = 2}, batch = 2,
               optimizer = ms.optim.gd{lr = 0.05}, steps = 6, iterations = 6, meta_lr = 0.02,
               meta_optimizer = "adam", progress = false}
    for k, v in pairs(extra) do o[k] = v end
    return o
  end

  it("continue a run stopped by its callback bit for bit", function()
    local ck, log1, log2 = tmp(), tmp(), tmp()
    local full = ms.meta.train(opts{log = log1})
    local part = ms.meta.train(opts{log = log2, checkpoint = ck, every = 2, callback = function(k) return k == 3 end})
    assert.are.equal(3, #part.history)
    local saved = assert(ms.load(ck))
    assert.are.equal(3, saved.k) -- the callback's stop is saved too
    assert.are.equal("metastep meta.train checkpoint", saved.format)
    assert.are.equal(6, saved.host.sampler) -- 3 iterations of 2 tasks
    local rest = ms.meta.train(opts{log = log2, resume = ck})
    same(full.theta, rest.theta)
    same(full.history, rest.history)
    same(full.best_theta, rest.best_theta)
    assert.are.equal(full.best_k, rest.best_k)
    assert.are.equal(read(log1), read(log2))
  end)

  it("keep the reverse method's checkpoint = K stride (an integer)", function()
    local a = ms.meta.train(opts{})
    local b = ms.meta.train(opts{checkpoint = 2})
    same(a.theta, b.theta)
  end)

  it("refuse a truncated or bit-flipped checkpoint with the message, leaving the state untouched", function()
    local ck, log = tmp(), tmp()
    ms.meta.train(opts{checkpoint = ck, log = log, iterations = 2})
    local good, logtext = read(ck), read(log)
    local cases = {
      {good:sub(1, #good - 9), "truncated: the header announces"},
      {good:sub(1, 100) .. string.char(good:byte(101) ~ 16) .. good:sub(102), "checksum mismatch"},
    }
    for _, c in ipairs(cases) do
      write(ck, c[1])
      ms.seed(11)
      local msg = h.err_of(ms.meta.train, opts{checkpoint = ck, resume = ck, log = log})
      starts(msg, "meta.train: cannot resume: '" .. ck .. "': ")
      assert.is_truthy(msg:find(c[2], 1, true), msg)
      assert.are.equal(c[1], read(ck)) -- the damaged file is left for inspection
      assert.are.equal(logtext, read(log))
      local after = ms.randn{3}
      ms.seed(11)
      same(ms.randn{3}, after) -- the generator was not touched
    end
  end)

  it("refuse a resume that does not continue the same run", function()
    local ck = tmp()
    ms.meta.train(opts{checkpoint = ck, iterations = 2})
    assert.are.equal("meta.train: cannot resume from '" .. ck .. "': option 'meta_lr' was 0.02, this run has 0.03 "
                     .. "(a resume continues the same run)",
                     h.err_of(ms.meta.train, opts{resume = ck, meta_lr = 0.03}))
    assert.are.equal("meta.train: cannot resume from '" .. ck .. "': it was made with optimizer 'gd', this run "
                     .. "has 'adam'", h.err_of(ms.meta.train, opts{resume = ck, optimizer = ms.optim.adam{lr = 0.1}}))
    assert.are.equal("meta.train: cannot resume from '" .. ck .. "': it was made at iteration 2, past option "
                     .. "'iterations' = 1", h.err_of(ms.meta.train, opts{resume = ck, iterations = 1}))
    local q = ms.objective.quadratic(ms.tensor{{1, 0, 0}, {0, 2, 0}, {0, 0, 3}})
    assert.are.equal("meta.train: cannot resume: the checkpoint holds the position of an ms.tasks sampler, option "
                     .. "'sample' is not one",
                     h.err_of(ms.meta.train, opts{resume = ck, sample = function() return {objective = q} end}))
    local log = tmp()
    write(log, "iter,lr,meta_loss,grad_lr,status\n")
    assert.are.equal("meta.train: cannot resume the log '" .. log .. "': it holds 0 whole rows, the checkpoint is "
                     .. "at iteration 2", h.err_of(ms.meta.train, opts{resume = ck, log = log}))
    assert.are.equal("meta.train: option 'every' needs checkpoint = \"file\"", h.err_of(ms.meta.train, opts{every = 2}))
    assert.are.equal("meta.train: option 'every' must be an integer >= 1, got 0",
                     h.err_of(ms.meta.train, opts{checkpoint = ck, every = 0}))
    assert.are.equal("meta.train: option 'resume' must be a checkpoint file name, got number",
                     h.err_of(ms.meta.train, opts{resume = 1}))
  end)
end)
