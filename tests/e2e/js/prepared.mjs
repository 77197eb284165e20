// Starts matrix-js-sdk against a homeserver and reports once it is PREPARED.
// Usage: node prepared.mjs BASE_URL USER_ID ACCESS_TOKEN DEVICE_ID ROOM_ID
import * as sdk from "matrix-js-sdk";

const [baseUrl, userId, accessToken, deviceId, roomId] = process.argv.slice(2);
const silent = { trace() {}, debug() {}, info() {}, log() {}, warn() {}, error() {}, getChild() { return silent; } };
const client = sdk.createClient({ baseUrl, userId, accessToken, deviceId, logger: silent });
const timer = setTimeout(() => { console.log(JSON.stringify({ error: "timeout" })); process.exit(2); }, 30000);

client.on(sdk.ClientEvent.Sync, (state) => {
  if (state === "ERROR") {
    console.log(JSON.stringify({ error: "sync error" }));
    process.exit(3);
  }
  if (state !== "PREPARED") return;
  const room = client.getRoom(roomId);
  const events = room ? room.getLiveTimeline().getEvents() : [];
  const last = events[events.length - 1];
  const actions = last ? client.getPushActionsForEvent(last) : null;
  console.log(JSON.stringify({
    state,
    overrideRules: (client.pushRules?.global?.override ?? []).map((r) => r.rule_id),
    total: room ? room.getUnreadNotificationCount(sdk.NotificationCountType.Total) : null,
    highlight: room ? room.getUnreadNotificationCount(sdk.NotificationCountType.Highlight) : null,
    lastBody: last ? last.getContent().body : null,
    lastNotify: actions ? actions.notify : null,
    lastHighlight: actions ? Boolean(actions.tweaks?.highlight) : null,
  }));
  clearTimeout(timer);
  client.stopClient();
  process.exit(0);
});
client.startClient({ initialSyncLimit: 10 });
