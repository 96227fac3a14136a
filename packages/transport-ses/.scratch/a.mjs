import { SESv2Client, SendEmailCommand } from '@aws-sdk/client-sesv2';
import server from 'aws-ses-v2-local';

const s = await (server.default ?? server)({ host: '127.0.0.1', port: 0 });
const port = s.address().port;
const client = new SESv2Client({
  endpoint: `http://127.0.0.1:${port}`,
  region: 'us-east-1',
  credentials: { accessKeyId: 'AKIAFAKE', secretAccessKey: 'fake-secret' },
  maxAttempts: 1,
});
const r = await client.send(
  new SendEmailCommand({
    FromEmailAddress: 'a@example.org',
    Destination: { ToAddresses: ['b@example.org'], BccAddresses: ['c@example.org'] },
    Content: {
      Raw: {
        Data: Buffer.from(
          'From: A <a@example.org>\r\nTo: b@example.org\r\nSubject: héllo\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nbody\r\n',
        ),
      },
    },
    EmailTags: [{ Name: 'x', Value: 'y' }],
  }),
);
console.log(r);
const store = await (await fetch(`http://127.0.0.1:${port}/store`)).json();
console.log(JSON.stringify(store, null, 1));
try {
  await new SESv2Client({
    endpoint: `http://127.0.0.1:${port}`,
    region: 'us-east-1',
    credentials: { accessKeyId: 'AKIAFAKE', secretAccessKey: 'fake-secret' },
    maxAttempts: 1,
  }).send(new SendEmailCommand({ Content: { Simple: { Subject: { Data: 's' }, Body: {} } } }));
} catch (e) {
  console.log(e.name, e.message, e.$metadata, e.$fault, e.$response?.headers);
}
s.close();
