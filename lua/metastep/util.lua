--- Helpers shared by the front library's modules.
local M = {}

-- Chunk names of the embedded front library ("@metastep/meta.lua").
local function is_library(info) return info.what == "C" or info.source:sub(1, 10) == "@metastep/" end

--- The error level of the first caller outside the front library, for error(msg, level)
-- called from the function that calls level_outside (as luaL_argerror blames the caller).
function M.level_outside()
  local level = 3 -- 1: level_outside, 2: its caller, 3: the caller's caller
  while true do
    local info = debug.getinfo(level, "S")
    if not info or not is_library(info) then return level - 1 end
    level = level + 1
  end
end

--- Raises prefix .. fmt:format(...) blamed on the first caller outside the front library.
function M.raise(prefix, fmt, ...)
  local msg = prefix .. fmt:format(...)
  local level = 2
  while true do
    local info = debug.getinfo(level, "S")
    if not info or not is_library(info) then break end
    level = level + 1
  end
  error(msg, level)
end

--- A number for a message: NaN prints as "nan" on every platform (tostring gives "-nan" on x86).
function M.show(v)
  if type(v) == "number" and v ~= v then return "nan" end
  return tostring(v)
end

return M
