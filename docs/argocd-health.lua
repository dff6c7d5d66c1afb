-- Argo CD health check for modelrollout.io/ModelDeployment (see docs/gitops.md).
-- Healthy: the spec's revision serves all traffic and its bake window is over.
-- Progressing: waiting for the operator, rolling out step by step, or baking after promotion.
-- Suspended: paused by spec.paused, or waiting at a pause step for a resume.
-- Degraded: rolled back, failed, or the operator reports Degraded.
-- Written for Lua 5.1 (Argo CD runs gopher-lua): no goto, no integer division, no bit operators.
local hs = {}

local function condition(status, kind)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

-- JSON numbers arrive as floats; print 3 as "3", not "3.0".
local function int(n)
  return string.format("%d", math.floor(n))
end

local function pause_step(spec, status)
  -- The current step, when it is a pause without a duration (it waits for a resume).
  if status.rollout == nil or spec == nil or spec.rollout == nil or spec.rollout.steps == nil then
    return nil
  end
  local index = status.rollout.step or 0
  local step = spec.rollout.steps[index + 1]
  if step ~= nil and step.pause ~= nil and step.pause.duration == nil then
    return index
  end
  return nil
end

local function with_message(status, health, message)
  hs.status = health
  hs.message = message
  if hs.message == nil or hs.message == "" then
    hs.message = status.message or ""
  end
  return hs
end

if obj.status == nil or obj.status.observedGeneration == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to reconcile the ModelDeployment"
  return hs
end

local status = obj.status
local generation = obj.metadata.generation
if generation ~= nil and status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. int(generation)
    .. " (status describes generation " .. int(status.observedGeneration) .. ")"
  return hs
end

local phase = status.phase or "Pending"
local degraded = condition(status, "Degraded")
local ready = condition(status, "Ready")

if phase == "RolledBack" then
  local reason = status.message or ""
  local last = nil
  if status.history ~= nil then
    last = status.history[1]
  end
  if last ~= nil and last.revision == status.failedRevision and last.reason ~= nil then
    reason = last.reason
  end
  return with_message(status, "Degraded", "Revision " .. (status.failedRevision or "?")
    .. " was rolled back (" .. reason .. "); revision " .. (status.stableRevision or "?")
    .. " serves. Change the spec, or set the modelrollout.io/retry annotation to try again")
end

if phase == "Failed" or phase == "Degraded" or (degraded ~= nil and degraded.status == "True") then
  local message = status.message
  if (message == nil or message == "") and degraded ~= nil then
    message = degraded.message
  end
  return with_message(status, "Degraded", message)
end

local weight = int(status.canaryWeight or 0)

if phase == "Paused" or (obj.spec ~= nil and obj.spec.paused == true and status.canaryRevision ~= nil) then
  return with_message(status, "Suspended", "Paused by spec.paused with " .. weight
    .. "% of traffic on canary revision " .. (status.canaryRevision or "?")
    .. "; set spec.paused to false to continue")
end

local waiting = pause_step(obj.spec, status)
if phase == "Progressing" and status.canaryRevision ~= nil and waiting ~= nil then
  return with_message(status, "Suspended", "Waiting at pause step " .. int(waiting) .. " with "
    .. weight .. "% of traffic on canary revision " .. status.canaryRevision
    .. "; set the modelrollout.io/resume annotation (kubectl modelrollout resume "
    .. obj.metadata.name .. ") to continue")
end

if phase == "Progressing" or phase == "Pending" then
  return with_message(status, "Progressing", status.message)
end

if phase == "Ready" then
  if status.bake ~= nil then
    return with_message(status, "Progressing", "Revision " .. (status.stableRevision or "?")
      .. " is promoted and baking until " .. (status.bake["until"] or "?")
      .. "; a regression before then rolls back to revision "
      .. (status.bake.previousRevision or "?"))
  end
  if ready ~= nil and ready.status == "True" then
    return with_message(status, "Healthy", status.message)
  end
  return with_message(status, "Progressing", status.message)
end

-- A phase this check does not know (a newer operator): trust the Ready condition.
if ready ~= nil and ready.status == "True" then
  return with_message(status, "Healthy", status.message)
end
return with_message(status, "Unknown", "Unrecognised phase " .. phase)
