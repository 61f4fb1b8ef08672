// The official TypeScript SDK (@anthropic-ai/sdk) through the gateway: a plain call, a streamed call, a tool
// call answered with its tool_result, and a mid-conversation system message. Run by tests/e2e/test_typescript_sdk.py
// with CLAWBACK_URL, CLAWBACK_KEY and CLAWBACK_MODEL set; prints one JSON object with what it saw, including
// the exact bytes of every request body the SDK sent (for the byte-for-byte forwarding check).
import Anthropic from "@anthropic-ai/sdk";

const sent = [];
const recordingFetch = async (url, init) => {
  if (init && typeof init.body === "string") sent.push(init.body);
  return fetch(url, init);
};
const client = new Anthropic({
  baseURL: process.env.CLAWBACK_URL,
  apiKey: process.env.CLAWBACK_KEY,
  maxRetries: 0,
  fetch: recordingFetch,
});
const model = process.env.CLAWBACK_MODEL;
const text = (message) => message.content.filter((b) => b.type === "text").map((b) => b.text).join("");

const plain = await client.messages.create({
  model,
  max_tokens: 64,
  messages: [{ role: "user", content: "Hello from the TypeScript SDK" }],
});

const events = [];
let deltas = "";
const stream = client.messages.stream({
  model,
  max_tokens: 64,
  messages: [{ role: "user", content: "Stream me a reply" }],
});
stream.on("streamEvent", (event) => {
  events.push(event.type);
  if (event.type === "content_block_delta" && event.delta.type === "text_delta") deltas += event.delta.text;
});
const streamed = await stream.finalMessage();

const tools = [
  {
    name: "get_listing",
    description: "Look up a listing by its id",
    input_schema: { type: "object", properties: { id: { type: "string" } }, required: ["id"] },
  },
];
const question = { role: "user", content: "Is listing BW-7 still available?" };
const call = await client.messages.create({ model, max_tokens: 64, tools, messages: [question] });
const use = call.content.find((b) => b.type === "tool_use");
const answer = await client.messages.create({
  model,
  max_tokens: 64,
  tools,
  messages: [
    question,
    { role: "assistant", content: call.content },
    { role: "user", content: [{ type: "tool_result", tool_use_id: use.id, content: "BW-7: available" }] },
  ],
});

const withSystem = await client.messages.create({
  model,
  max_tokens: 64,
  messages: [
    { role: "user", content: "Which language should the code be in?" },
    { role: "system", content: [{ type: "text", text: "This project is Go. Write all code in Go." }] },
  ],
});

console.log(
  JSON.stringify({
    plain: { text: text(plain), stop_reason: plain.stop_reason, usage: plain.usage },
    streamed: { text: text(streamed), deltas, events, stop_reason: streamed.stop_reason, usage: streamed.usage },
    tool: { stop_reason: call.stop_reason, name: use && use.name, input: use && use.input },
    answer: { text: text(answer), stop_reason: answer.stop_reason },
    system: { text: text(withSystem), stop_reason: withSystem.stop_reason },
    sent,
  }),
);
