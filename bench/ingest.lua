-- wrk script for bench/ingest.py: every request is a new signed Telegram Update.
--
-- wrk ... -s bench/ingest.lua URL -- FIRST THREADS CHATS SECRET
--
-- update_id = FIRST + n * THREADS + thread index (n counts this thread's requests), so
-- ids never repeat across threads, nor across runs given FIRSTs far enough apart; each
-- update is a text message in one of CHATS private chats, its sender the chat's owner.
-- done() prints one JSON line with the counts bench/ingest.py checks.

local threads = {}

function setup(thread)
  thread:set("index", #threads)
  table.insert(threads, thread)
end

function init(args)
  first = tonumber(args[1])
  stride = tonumber(args[2])
  chats = tonumber(args[3])
  headers = {
    ["Content-Type"] = "application/json",
    ["X-Telegram-Bot-Api-Secret-Token"] = args[4],
  }
  date = os.time()
  sent = 0
end

local template = '{"update_id":%d,"message":{"message_id":%d,"date":%d,'
  .. '"chat":{"id":%d,"type":"private","first_name":"Ada"},'
  .. '"from":{"id":%d,"is_bot":false,"first_name":"Ada","username":"ada"},'
  .. '"text":"message %d"}}'

function request()
  local id = first + sent * stride + index
  sent = sent + 1
  local chat = 1000000 + id % chats
  local body = string.format(template, id, sent, date, chat, chat, id)
  return wrk.format("POST", "/telegram/webhook", headers, body)
end

function done(summary, latency, requests)
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"non_2xx_3xx":%d,"connect":%d,"read":%d,'
      .. '"write":%d,"timeout":%d}\n',
    summary.requests, summary.duration, summary.errors.status, summary.errors.connect,
    summary.errors.read, summary.errors.write, summary.errors.timeout))
end
