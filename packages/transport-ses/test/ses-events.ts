import { createSign, randomBytes } from 'node:crypto';
import { testCertificate } from '@mailvia/core/testing';

/**
 * SES notifications shaped as Amazon documents them ("Amazon SNS notification examples for Amazon
 * SES", https://docs.aws.amazon.com/ses/latest/dg/notification-examples.html, and "Event
 * publishing: examples of event data", https://docs.aws.amazon.com/ses/latest/dg/event-publishing-retrieving-sns-examples.html):
 * the field names and structure are Amazon's; the values are made up for these tests.
 */

const mail = (destination: string[]) => ({
  timestamp: '2016-01-27T14:59:38.237Z',
  source: 'john@example.com',
  sourceArn: 'arn:aws:ses:us-east-1:888888888888:identity/example.com',
  sourceIp: '127.0.3.0',
  sendingAccountId: '123456789012',
  messageId: '00000138111222aa-33322211-cccc-cccc-cccc-ddddaaaa0680-000000',
  destination,
  headersTruncated: false,
  headers: [
    { name: 'From', value: 'John Doe <john@example.com>' },
    { name: 'To', value: destination.join(', ') },
    { name: 'Message-ID', value: '<custom-message-id@example.com>' },
    { name: 'Subject', value: 'Hello' },
  ],
  commonHeaders: {
    from: ['John Doe <john@example.com>'],
    date: 'Wed, 27 Jan 2016 14:05:45 +0000',
    to: destination,
    messageId: '<custom-message-id@example.com>',
    subject: 'Hello',
  },
  tags: { campaign: ['spring'] },
});

export const sesBounce = {
  notificationType: 'Bounce',
  bounce: {
    bounceType: 'Permanent',
    reportingMTA: 'dns; email.example.com',
    bouncedRecipients: [
      {
        emailAddress: 'jane@example.com',
        status: '5.1.1',
        action: 'failed',
        diagnosticCode: 'smtp; 550 5.1.1 <jane@example.com>... User',
      },
    ],
    bounceSubType: 'General',
    timestamp: '2016-01-27T14:59:38.237Z',
    feedbackId: '00000138111222aa-33322211-cccc-cccc-cccc-ddddaaaa068a-000000',
    remoteMtaIp: '127.0.2.0',
  },
  mail: mail(['jane@example.com']),
};

export const sesTransientBounce = {
  notificationType: 'Bounce',
  bounce: {
    bounceType: 'Transient',
    bounceSubType: 'MailboxFull',
    bouncedRecipients: [{ emailAddress: 'full@example.com', status: '4.2.2', action: 'failed' }],
    timestamp: '2016-01-27T14:59:38.237Z',
    feedbackId: '00000138111222aa-44422211-cccc-cccc-cccc-ddddaaaa068a-000000',
  },
  mail: mail(['full@example.com']),
};

export const sesComplaint = {
  notificationType: 'Complaint',
  complaint: {
    userAgent: 'AnyCompany Feedback Loop (V0.01)',
    complainedRecipients: [{ emailAddress: 'richard@example.com' }],
    complaintFeedbackType: 'abuse',
    arrivalDate: '2016-01-27T14:59:38.237Z',
    timestamp: '2016-01-27T14:59:38.237Z',
    feedbackId: '000001378603177f-18c07c78-fa81-4a58-9dd1-fedc3cb8f49a-000000',
  },
  mail: mail(['richard@example.com']),
};

export const sesDelivery = {
  notificationType: 'Delivery',
  mail: mail(['jane@example.com', 'richard@example.com']),
  delivery: {
    timestamp: '2016-01-27T14:59:38.237Z',
    recipients: ['jane@example.com', 'richard@example.com'],
    processingTimeMillis: 546,
    reportingMTA: 'a8-70.smtp-out.amazonses.com',
    smtpResponse: '250 ok:  Message 64111812 accepted',
    remoteMtaIp: '127.0.2.0',
  },
};

export const sesClick = {
  eventType: 'Click',
  click: {
    ipAddress: '192.0.2.1',
    link: 'https://docs.aws.amazon.com/ses/latest/DeveloperGuide/send-email-smtp.html',
    linkTags: { samplekey0: ['samplevalue0'] },
    timestamp: '2017-08-09T23:51:25.570Z',
    userAgent: 'Mozilla/5.0',
  },
  mail: mail(['recipient@example.com']),
};

export const sesDeliveryDelay = {
  eventType: 'DeliveryDelay',
  mail: mail(['recipient@example.com']),
  deliveryDelay: {
    timestamp: '2020-06-16T00:15:40.641Z',
    delayType: 'TransientCommunicationFailure',
    expirationTime: '2020-06-16T00:25:40.914Z',
    delayedRecipients: [
      { emailAddress: 'recipient@example.com', status: '4.4.1', diagnosticCode: 'smtp; 421 4.4.1 Unable to connect' },
    ],
  },
};

// --- SNS envelopes, signed independently of the code under test (shared with @mailvia/express's tests)

export const TOPIC_A = 'arn:aws:sns:us-east-1:123456789012:ses-events-school-a';
export const CERT_URL = 'https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0000000000000000000000.pem';

/** An SNS message signed as AWS documents: "Name\nvalue\n" for the signed fields, RSA with SHA1 (v1) or SHA256 (v2). */
export function snsMessage(
  fields: Record<string, string>,
  options: { version?: string; key?: string; certUrl?: string; timestamp?: string } = {},
) {
  const version = options.version ?? '2';
  const m: Record<string, string> = {
    MessageId: `${randomBytes(8).toString('hex')}-0000-4000-8000-000000000000`,
    Timestamp: options.timestamp ?? new Date().toISOString(),
    SignatureVersion: version,
    SigningCertURL: options.certUrl ?? CERT_URL,
    ...fields,
  };
  const order =
    m.Type === 'Notification'
      ? ['Message', 'MessageId', 'Subject', 'Timestamp', 'TopicArn', 'Type']
      : ['Message', 'MessageId', 'SubscribeURL', 'Timestamp', 'Token', 'TopicArn', 'Type'];
  const text = order
    .filter((f) => m[f] !== undefined)
    .map((f) => `${f}\n${m[f]}\n`)
    .join('');
  const signer = createSign(version === '1' ? 'RSA-SHA1' : 'RSA-SHA256');
  signer.update(text);
  m.Signature = signer.sign(options.key ?? testCertificate().key, 'base64');
  return m;
}

export function notification(sesEvent: unknown, topic = TOPIC_A, options: Parameters<typeof snsMessage>[1] = {}) {
  return snsMessage({ Type: 'Notification', TopicArn: topic, Message: JSON.stringify(sesEvent) }, options);
}
