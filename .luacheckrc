-- luacheck configuration (Debian's lua-check); CI runs `luacheck lua/metastep scripts tests/lua`.
std = "lua54"
max_line_length = 120
-- the metastep executable gives scripts `arg`
read_globals = {"arg"}
-- `not (x > y)` is how a NaN is kept out of a range check: the suggested `x <= y` would let it in
ignore = {"581"}
-- specs: busted's globals; lines of expected messages run long; io.stderr is swapped to capture
-- progress output; local helpers may reuse short names (h, ms, spec) of an enclosing scope
files["tests/lua"] = {std = "+busted", max_line_length = 140, ignore = {"122/io", "431", "432"}}
-- a table of exact error messages, one per line
files["tests/lua/errors_spec.lua"] = {max_line_length = false}
