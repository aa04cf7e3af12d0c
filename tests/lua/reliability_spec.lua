-- Regressions for issue 14 (reliability): each reproducer from the issue, as a user would
-- type it, must give a clear error naming the function, the option and the value, blamed on
-- the caller's line (here: this file), or the right answer; never undefined behaviour,
-- runaway memory or a silently wrong result.
local ms = require "metastep"

local THIS = debug.getinfo(1, "S").short_src

-- The message of the error f(...) raises when called from a line of this file (not as a
-- tail call, which would leave no caller line); asserts it is blamed on this file.
local function err_of(f, ...)
  local ok, err = pcall(function(...)
    local r = f(...)
    return r
  end, ...)
  assert.is_false(ok, "expected an error")
  assert.is_string(err)
  local src, msg = err:match("^([^\n]-):%d+: (.*)$")
  assert.are.equal(THIS, src, "blamed on: " .. err)
  return msg
end

local function has(text, f, ...)
  local msg = err_of(f, ...)
  assert.is_truthy(msg:find(text, 1, true), ("expected %q in %q"):format(text, msg))
end

describe("shape arithmetic (item 1)", function()
  local big = 1 << 62
  it("a zero size does not hide an overflowing product of the others", function()
    assert.are.equal("tensor: shape [0,4611686018427387904,2] is too large (its nonzero sizes "
      .. "multiply to more than 2^50)", err_of(ms.zeros, {0, big, 2}))
    has("too large", function() return ms.zeros{0, 1, big}:expand{0, 2, big}:permute{3, 2, 1} end)
    has("too large", function() return ms.cat({ms.zeros{0, big}, ms.zeros{0, big}}, 2) end)
    has("reshape: shape [0,2,4611686018427387904] is too large",
      function() return ms.zeros{0, 4}:reshape{0, 2, big} end)
  end)

  it("a sample-index table whose __len is 2^62 (the byte count wrapped: a heap overflow)", function()
    -- found by tests/fuzz/fuzz.lua --seed 2 on the code before this fix (a segfault)
    local obj = ms.objective.least_squares(ms.ones(3, 2), ms.tensor{1, 2, 3})
    local idx = setmetatable({}, {__len = function() return 1 << 62 end, __index = function() return 3 end})
    has("bad argument #1 to 'minibatch' (too many sample indices (4611686018427387904))",
      function() return (obj:minibatch(idx)) end)
  end)

  it("the largest valid empty shapes still work, and their views", function()
    local half = 1 << 49
    local e = ms.zeros{0, 1, half}
    assert.are.same({0, 2, half}, e:expand{0, 2, half}:shape())
    assert.are.same({half, 2, 0}, e:expand{0, 2, half}:permute{3, 2, 1}:shape())
    assert.are.same({0, 2 * half}, ms.cat({ms.zeros{0, half}, ms.zeros{0, half}}, 2):shape())
    has("cat: the sizes along axis 2 add up to more than 2^50",
      ms.cat, {ms.zeros{0, half}, ms.zeros{0, half}, ms.zeros{0, half}}, 2)
    has("add: shape [33554432,67108864] has more than 2^50 elements",
      function() return ms.zeros{1 << 25, 1} + ms.zeros{1, 1 << 26} end)
  end)

  it("a shape table whose __len exceeds 2^32 is refused, not truncated", function()
    local shape = setmetatable({}, {__len = function() return (1 << 32) + 1 end, __index = function() return 2 end})
    has("bad argument #1 to 'zeros' (at most 8 dimensions, got 4294967297)", function() return (ms.zeros(shape)) end)
    has("at most 8 dimensions, got 4294967297", function() return ms.zeros(2):reshape(shape) end)
    has("at most 8 dimensions, got 4294967297", function() return ms.zeros(1):expand(shape) end)
    local neg = setmetatable({}, {__len = function() return -1 end})
    has("at most 8 dimensions, got -1", ms.ones, neg)
  end)
end)

describe("options are validated (item 3)", function()
  local obj = ms.objective.quadratic(ms.tensor{{2, 0}, {0, 1}})
  local function spec(extra)
    local s = {objective = obj, optimizer = ms.optim.gd{lr = 0.1}, w0 = ms.tensor{1, 1}, steps = 5,
               meta = "log", method = "reverse"}
    for k, v in pairs(extra) do s[k] = v end
    return s
  end
  local function train(extra)
    local s = spec(extra)
    s.iterations = s.iterations or 2
    s.meta_lr = s.meta_lr or 0.01
    return ms.meta.train(s)
  end

  it("meta.train: clip, meta_lr and iterations out of range", function()
    assert.are.equal("meta.train: option 'clip' must be > 0, got -1", err_of(train, {clip = -1}))
    assert.are.equal("meta.train: option 'meta_lr' must be >= 0, got -1", err_of(train, {meta_lr = -1}))
    for _, bad in ipairs{{-5, "-5"}, {0 / 0, "nan"}, {1.5, "1.5"}} do
      assert.are.equal("meta.train: option 'iterations' must be an integer >= 0, got " .. bad[2],
        err_of(train, {iterations = bad[1]}))
    end
  end)

  it("fd_step = 0, freeze_norm = -1 and params = 'lr'", function()
    assert.are.equal("meta: 'fd_step' must be a finite number > 0, got 0",
      err_of(ms.meta.value_and_grad, spec{method = "fd", fd_step = 0}))
    assert.are.equal("meta: 'freeze_norm' must be a finite number > 0, got -1",
      err_of(ms.meta.value_and_grad, spec{freeze_norm = -1}))
    assert.are.equal("meta: 'params' must be a list of meta-parameter names, got string",
      err_of(ms.meta.value_and_grad, spec{params = "lr"}))
  end)

  it("misspelled option keys are refused", function()
    assert.are.equal("meta: unknown option 'stpes'", err_of(ms.meta.value_and_grad, spec{stpes = 3}))
    assert.are.equal("meta.train: unknown option 'iteratons' (did you mean 'iterations'?)",
      err_of(train, {iteratons = 3}))
    has("unknown option 'lrr'", ms.optim.gd, {lrr = 0.1})
  end)

  it("misspelled option keys of the constructors and transforms are refused too", function()
    assert.are.equal("bad argument #2 to 'randn' (unknown option 'sed' (expected seed, mean, std))",
      err_of(function() return (ms.randn({2}, {sed = 1})) end))
    has("bad argument #2 to 'rand' (unknown option 'low' (expected seed, lo, hi))",
      function() return (ms.rand({2}, {low = 1})) end)
    has("unknown option 'wstr' (expected wstar, fstar)",
      function() return (ms.objective.quadratic(ms.eye(2), {wstr = ms.ones(2)})) end)
    assert.are.equal("objective.random_quadratic: unknown option 'sed' (did you mean 'seed'?) "
      .. "(expected d, eigenvalues, spacing, seed, wstar)", err_of(ms.objective.random_quadratic, {d = 2, sed = 1}))
    has("tasks.least_squares: unknown option 'n_trian' (did you mean 'n_train'?)",
      ms.tasks.least_squares, {d = 2, n_trian = 3})
    has("tasks.quadratic: unknown option 'eigenvalue'", ms.tasks.quadratic, {d = 2, eigenvalue = {1, 2}})
    local f = function(x) return x:sum() end
    assert.are.equal("grad: unknown option 'argnum' (did you mean 'argnums'?) (expected argnums)",
      err_of(ms.grad, f, {argnum = 1}))
    has("check_grad: unknown option 'rtl'", ms.check_grad, f, ms.ones(2), {rtl = 1})
    assert.are.equal("check_grad: option 'eps' must be a finite number > 0, got 0",
      err_of(ms.check_grad, f, ms.ones(2), {eps = 0}))
    has("objective.from_function: unknown option 'dimm'", ms.objective.from_function, f, {dimm = 2})
  end)

  it("the stable method refuses an indefinite H (its loss goes negative)", function()
    local indef = ms.objective.quadratic(ms.tensor{{1, 0}, {0, -1}})
    has("needs a positive semi-definite H (smallest eigenvalue -1, largest 1)",
      ms.meta.value_and_grad, spec{objective = indef, method = "stable"})
  end)
end)

describe("expand views are read-only (item 3)", function()
  local function expanded() return ms.tensor{{1, 2, 3}}:expand{4, 3} end
  local tail = " a view of an expanded tensor (shape [4,3] shares its elements with other "
    .. "positions; clone it first)"

  it("fill, assign and index assignment refuse it; the source is unchanged", function()
    local src = ms.tensor{{1, 2, 3}}
    local e = src:expand{4, 3}
    assert.are.equal("fill: cannot write into" .. tail, err_of(e.fill, e, 7))
    assert.are.equal("assign: cannot write into" .. tail, err_of(e.assign, e, ms.ones(4, 3)))
    assert.are.equal("set: cannot write into" .. tail, err_of(function() e[{1, 1}] = 5 end))
    has("fill: cannot write into a view of an expanded tensor (shape [3]",
      function() e[2] = 5 end)
    has("cannot write into a view of an expanded tensor", function() e:t()[{1, 1}] = 5 end)
    assert.are.same({{1, 2, 3}}, src:totable())
  end)

  it("a clone is writable, and so is the source", function()
    local e = expanded():clone()
    e[{1, 1}] = 5
    assert.are.same({{5, 2, 3}, {1, 2, 3}, {1, 2, 3}, {1, 2, 3}}, e:totable())
    local src = ms.tensor{{1, 2, 3}}
    local v = src:expand{2, 3}
    src[{1, 2}] = 9
    assert.are.same({{1, 9, 3}, {1, 9, 3}}, v:totable())
    -- an expand that repeats nothing is a plain view
    local same = src:expand{1, 3}
    same:fill(0)
    assert.are.same({{0, 0, 0}}, src:totable())
  end)
end)

describe("eigh and cholesky check symmetry (item 3)", function()
  it("refuse a non-symmetric matrix with the largest asymmetry", function()
    local A = ms.tensor{{4, 2}, {0, 3}}
    assert.are.equal("eigh: a must be symmetric, max |a - a^T| = 2 at a[1,2] (tolerance 1e-10 * "
      .. "max|a| = 4e-10)", err_of(ms.eigh, A))
    assert.are.equal("cholesky: a must be symmetric, max |a - a^T| = 2 at a[1,2] (tolerance 1e-10 * "
      .. "max|a| = 4e-10)", err_of(ms.cholesky, A))
    -- symmetric: L L^T = A with L = [[2, 0], [1, sqrt 2]] for A = [[4, 2], [2, 3]]
    local L = ms.cholesky(ms.tensor{{4, 2}, {2, 3}}):totable()
    assert.are.equal(2, L[1][1])
    assert.are.equal(1, L[2][1])
    assert.is_true(math.abs(L[2][2] - math.sqrt(2)) < 1e-15)
  end)
end)

describe("bounded memory (item 2)", function()
  it("totable counts the tables before building them", function()
    -- no element, but 1 + 2^40 + 2^42 tables: refused at once
    assert.are.equal("totable: a tensor of shape [1,1099511627776,4,0] makes 5497558138882 Lua "
      .. "tables and 0 numbers (about 377487360 MiB), past the limit of 1024 MiB (the memory "
      .. "budget, or 1 GiB when none is set)", err_of(function() return ms.zeros{1, 1 << 40, 4, 0}:totable() end))
    -- the limit follows the engine budget: 100 x 100 is 101 tables and 10^4 numbers (~0.16 MiB)
    local x = ms.ones(100, 100)
    collectgarbage()
    ms.set_memory_limit(ms.memory() + (1 << 20))
    local ok = pcall(function() return x:totable() end)
    ms.set_memory_limit(0)
    assert.is_true(ok)
    ms.set_memory_limit(ms.memory() + (64 << 10))
    local e = ms.zeros{3, 1000, 0}
    local msg = err_of(function() return e:totable() end)
    ms.set_memory_limit(0)
    assert.is_truthy(msg:find("makes 3004 Lua tables and 0 numbers", 1, true), msg)
    assert.are.same({{}, {}}, ms.zeros{2, 0}:totable())
  end)

  it("cyclic tables given to grad, value_and_grad, jvp, vjp and hvp are refused", function()
    local c = {ms.tensor{1, 2}}
    c[2] = {ms.ones(2), c}
    local function f(x) return x[1]:sum() end
    assert.are.equal("grad: argument 1: cyclic table at argument[2][2]", err_of(ms.grad(f), c))
    has("cyclic table at argument[2][2]", ms.value_and_grad(f), c)
    has("cyclic table at argument[2][2]", ms.vjp, f, c)
    has("cyclic table at argument[2][2]", ms.jvp, f, c, c)
    has("cyclic table at argument[2][2]", ms.hvp, f, c, c)
    -- a table reached twice without a cycle is fine: d/dx sum(x) + sum(x) = 2
    local shared = ms.tensor{1, 2}
    local g = ms.grad(function(x) return x[1]:sum() + x[2]:sum() end)({shared, shared})
    assert.are.same({1, 1}, g[1]:totable())
    assert.are.same({1, 1}, g[2]:totable())
  end)
end)

describe("errors found by the fuzzer point at the caller (item 4)", function()
  -- each raised a raw Lua error inside the library ("attempt to index a number value") or
  -- one with no position ("bad argument #1 to '?'") before
  local h = dofile((debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "tests/lua") .. "/helpers.lua")

  it("string arithmetic with a tensor", function()
    assert.are.equal("tensor arithmetic: operand 1 must be a tensor or a number, got string",
      err_of(function() return "x" + ms.ones(2) end))
    assert.are.equal("bad argument #2 to 'add' (tensor or number expected, got string)",
      err_of(function() return ms.ones(2) + "x" end))
  end)

  it("autodiff transforms with options, x or tangents of the wrong type", function()
    local f = function(x) return (x * x):sum() end
    assert.are.equal("grad: options must be a table, got number", err_of(ms.grad, f, 0.5))
    assert.are.equal("value_and_grad: options must be a table, got boolean", err_of(ms.value_and_grad, f, true))
    assert.are.equal("check_grad: x must be a tensor or a number, got nil", err_of(ms.check_grad, f, nil))
    assert.are.equal("check_grad: options must be a table, got string", err_of(ms.check_grad, f, 1, "x"))
    assert.are.equal("check_grad: x: bad argument #1 to 'index' (tensor has been released)",
      err_of(ms.check_grad, f, h.released()))
    assert.are.equal("jvp: argument 1: the tangent has no entry at [1] (its structure must match the "
      .. "argument's)", err_of(ms.jvp, function(x) return x[1]:sum() end, {ms.ones(2)}, 1))
  end)

  it("meta with a table posing as an optimizer", function()
    local fake = setmetatable({}, {__index = function() return 5 end}) -- every field is 5
    local spec = {objective = ms.objective.quadratic(ms.eye(2)), optimizer = fake, w0 = ms.ones(2), steps = 3}
    assert.are.equal("meta: 'optimizer' must be an optimizer (ms.optim.gd{...}, ...), got table",
      err_of(ms.meta.value_and_grad, spec))
    spec.iterations, spec.meta_lr = 1, 0.1
    assert.are.equal("meta.train: 'optimizer' must be an optimizer (ms.optim.gd{...}, ...), got table",
      err_of(ms.meta.train, spec))
    -- a released tensor as the objective: indexing it raised inside meta.lua
    spec.optimizer, spec.objective = ms.optim.gd{lr = 0.1}, h.released()
    assert.are.equal("meta: 'objective' must be an objective (ms.objective.quadratic(H), ...), got userdata",
      err_of(ms.meta.train, spec))
  end)

  it("random_quadratic with eigenvalues of the wrong type, allclose with a released tensor", function()
    assert.are.equal("objective.random_quadratic: eigenvalues must be {lo, hi} or a tensor, got number",
      err_of(ms.objective.random_quadratic, {d = 2, eigenvalues = 3}))
    assert.are.equal("allclose: argument 1: tensor has been released", err_of(ms.allclose, h.released(), ms.ones(2)))
    assert.are.equal("allclose: argument 2: tensor has been released", err_of(ms.allclose, ms.ones(2), h.released()))
  end)
end)

describe("check mode (item 6)", function()
  after_each(function() ms.set_check_numerics(false) end)

  it("reports the first primitive producing NaN or inf, with its inputs' shapes", function()
    assert.is_false(ms.set_check_numerics(true)) -- off by default; returns the previous setting
    assert.are.equal("check_numerics: log produced -inf at out[2] from finite inputs of shape [3]",
      err_of(ms.log, ms.tensor{1, 0, 2}))
    assert.are.equal("check_numerics: div produced inf at out[2,1] from finite inputs of shapes [2,2] and [2,2]",
      err_of(function() return ms.tensor{{1, 2}, {3, 4}} / ms.tensor{{1, 2}, {0, 4}} end))
    -- inside a gradient: the backward's reciprocal of sqrt(0), blamed on this line
    has("check_numerics: reciprocal produced inf at out[1]",
      function() return ms.grad(function(x) return ms.sqrt(x):sum() end)(ms.tensor{0, 1}) end)
    -- a NaN that came in is not reported again
    assert.is_true(ms.exp(ms.tensor{0 / 0}):totable()[1] ~= ms.exp(ms.tensor{0 / 0}):totable()[1])
    assert.is_true(ms.set_check_numerics(false))
    assert.are.equal(-math.huge, ms.log(ms.tensor{0}):totable()[1])
  end)
end)
