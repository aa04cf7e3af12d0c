local ms = require "metastep"

describe("tensor construction", function()
  it("builds from nested tables", function()
    local t = ms.tensor{{1, 2}, {3, 4}}
    assert.are.same({2, 2}, t:shape())
    assert.are.equal(3, t[{2, 1}])
  end)
  it("rejects ragged tables", function()
    assert.has_error(function() ms.tensor{{1, 2}, {3}} end,
      "tensor: ragged nested table: [2] has 1 elements, expected 2")
  end)
end)
