//! What a request names, checked: the room and the name, decoded from
//! the query and made visible (no Unicode format characters, no white
//! space around them), and a poller's client token.

use wsloop::Request;

use crate::Member;

/// Longest room name, in characters.
const MAX_ROOM: usize = 32;
/// Longest nickname, in characters.
const MAX_NAME: usize = 24;
/// Lengths a poller's `client=` token may have.
const CLIENT_TOKEN: std::ops::RangeInclusive<usize> = 8..=64;

/// Room and name from a query such as `/ws?room=R&name=N`, decoded and
/// made [`visible`].
pub fn member_of(path: &str) -> Option<Member> {
    let query = path.split_once('?')?.1;
    let mut room = None;
    let mut name = None;
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=')?;
        match key {
            "room" => room = Some(percent_decode(value)?),
            "name" => name = Some(percent_decode(value)?),
            _ => {}
        }
    }
    Some(Member {
        room: visible(&room?, MAX_ROOM)?,
        name: visible(&name?, MAX_NAME)?,
        ..Member::default()
    })
}

/// A room or a name as others see it: without format characters, which
/// show nothing or, as bidi overrides, reorder the page's text after
/// them, and without white space around it. `None` if nothing is left, if
/// more than `max` characters are, or if it holds a control character.
fn visible(raw: &str, max: usize) -> Option<String> {
    if raw.chars().any(char::is_control) {
        return None;
    }
    let kept: String = raw.chars().filter(|&c| !is_format(c)).collect();
    let kept = kept.trim();
    (!kept.is_empty() && kept.chars().count() <= max).then(|| kept.to_owned())
}

/// Unicode's format characters (general category Cf, as of Unicode 15),
/// as inclusive ranges: soft hyphen, Arabic number signs, zero-width
/// spaces and joiners, bidi marks, embeddings, overrides and isolates,
/// invisible operators, the byte order mark, interlinear annotation,
/// shorthand, musical and tag characters.
const FORMAT: [(u32, u32); 21] = [
    (0x00AD, 0x00AD),
    (0x0600, 0x0605),
    (0x061C, 0x061C),
    (0x06DD, 0x06DD),
    (0x070F, 0x070F),
    (0x0890, 0x0891),
    (0x08E2, 0x08E2),
    (0x180E, 0x180E),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x2064),
    (0x2066, 0x206F),
    (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB),
    (0x110BD, 0x110BD),
    (0x110CD, 0x110CD),
    (0x13430, 0x1343F),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0001, 0xE0001),
    (0xE0020, 0xE007F),
];

fn is_format(c: char) -> bool {
    let c = u32::from(c);
    FORMAT
        .iter()
        .any(|&(first, last)| (first..=last).contains(&c))
}

/// The poller's token from `client=`: 8 to 64 of `A-Z a-z 0-9 _ -`,
/// which a URL carries as they are.
pub fn client_of<'a>(req: &Request<'a>) -> Option<&'a str> {
    req.query("client").filter(|token| {
        CLIENT_TOKEN.contains(&token.len())
            && token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    })
}

/// Decodes `%XX` escapes (and `+` as space); `None` if it is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'%' => {
                let hex = [bytes.next()?, bytes.next()?];
                out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
    }
    String::from_utf8(out).ok()
}
