-- The clock, process, thread-setting and product-counter bindings (lms_sys.c) that the benchmark
-- suite uses: what they return and how they refuse bad arguments.
local ms = require "metastep"
local core = ms.core

describe("clock", function()
  it("is monotonic wall time", function()
    local a = core.clock()
    local b = core.clock()
    assert.is_true(type(a) == "number" and b >= a)
  end)
end)

describe("threads", function()
  after_each(function() ms.set_threads(0) end)

  it("a fixed count applies to every product", function()
    ms.set_threads(3)
    assert.are.equal(3, ms.threads())
    assert.are.equal(3, ms.threads(1))
    assert.are.equal(3, ms.threads(10 ^ 9 // 1))
  end)

  it("by size: one thread for a small product unless the environment set the count", function()
    ms.set_threads(0)
    assert.are.equal(0, ms.threads())
    local env = os.getenv("OPENBLAS_NUM_THREADS") or os.getenv("OMP_NUM_THREADS")
    if env then
      assert.are.equal(ms.threads(100 * 100), ms.threads(4000 * 4000))
    else
      assert.are.equal(1, ms.threads(100 * 100))
    end
    assert.is_true(ms.threads(4000 * 4000) >= 1)
  end)

  it("refuses bad counts", function()
    assert.has_error(function() ms.set_threads(-1) end,
      "bad argument #1 to 'set_threads' (expected a thread count >= 1, or 0 = by size)")
    assert.has_error(function() ms.set_threads("x") end,
      "bad argument #1 to 'set_threads' (number expected, got string)")
    assert.has_error(function() ms.threads(-5) end,
      "bad argument #1 to 'threads' (expected a number of multiply-adds >= 0)")
  end)
end)

describe("products", function()
  it("counts matrix-vector products, not dot products", function()
    local n = core.products()
    local y = ms.matvec(ms.ones(3, 3), ms.ones(3))
    ms.dot(y, y)
    assert.are.equal(n + 1, core.products())
  end)
end)

describe("spawn_pipes", function()
  it("runs a program with pipes to its input and output, no shell", function()
    local p = assert(core.spawn_pipes{"cat"})
    p.stdin:write("a line; with $(shell) characters\n")
    p.stdin:close()
    assert.are.equal("a line; with $(shell) characters", p.stdout:read("l"))
    p.stdout:close()
    assert.are.equal(0, core.wait(p.pid))
  end)

  it("reports the exit status", function()
    local p = assert(core.spawn_pipes{"sh", "-c", "exit 3"})
    p.stdin:close()
    p.stdout:close()
    assert.are.equal(3, core.wait(p.pid))
  end)

  it("returns nil and a message for a program that cannot start", function()
    local p, err = core.spawn_pipes{"/nonexistent/program"}
    assert.is_nil(p)
    assert.are.equal("spawn_pipes: cannot start '/nonexistent/program': No such file or directory", err)
  end)

  it("refuses a bad argument vector", function()
    assert.has_error(function() core.spawn_pipes("cat") end,
      "bad argument #1 to 'spawn_pipes' (table expected, got string)")
    assert.has_error(function() core.spawn_pipes{} end,
      "bad argument #1 to 'spawn_pipes' (expected a non-empty list of strings)")
    assert.has_error(function() core.spawn_pipes{"cat", 3} end, "spawn_pipes: argv[2] must be a string, got number")
  end)
end)
