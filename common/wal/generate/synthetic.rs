//! The synthetic payload: WAL-like records (the layout of PostgreSQL's
//! XLogRecord, block references, heap tuples and full-page images, with
//! pgbench's values), built deterministically so every run and machine
//! generates the same bytes.

use crate::rng::Rng;
use crate::walname::PAGE_SIZE;

/// Size of the synthetic pool: large enough that no page repeats within a
/// 16 MiB segment's worth of gzip windows, small enough to build in
/// milliseconds.
pub(super) const SYNTHETIC_BYTES: usize = 4 << 20;

// pgbench's relations, as they appear in block references.
const REL_ACCOUNTS: u32 = 16396;
const REL_TELLERS: u32 = 16399;
const REL_BRANCHES: u32 = 16397;
const REL_HISTORY: u32 = 16408;
const ACCOUNTS_PAGES: u64 = 8197;
const ACCOUNTS_PER_PAGE: u64 = 61;

/// Builds WAL-like records: the layout of PostgreSQL's XLogRecord, block
/// references, heap tuples and full-page images, with pgbench's values.
struct WalBuilder {
    out: Vec<u8>,
    rng: Rng,
    xid: u32,
    prev: u64,
    time: u64,
}

impl WalBuilder {
    /// Appends one record: the 24-byte XLogRecord header, then `body`,
    /// padded to 8 bytes.
    fn record(&mut self, rmid: u8, info: u8, body: &[u8]) {
        let start = self.out.len();
        let crc = self.rng.next_u64() as u32;
        self.out
            .extend_from_slice(&((24 + body.len()) as u32).to_le_bytes());
        self.out.extend_from_slice(&self.xid.to_le_bytes());
        self.out.extend_from_slice(&self.prev.to_le_bytes());
        self.out.extend_from_slice(&[info, rmid, 0, 0]);
        self.out.extend_from_slice(&crc.to_le_bytes());
        self.out.extend_from_slice(body);
        self.out.resize(self.out.len().next_multiple_of(8), 0);
        self.prev = 0x1_0000_0000 + start as u64;
    }

    /// A block reference header for `rel` block `blkno`.
    fn block_ref(body: &mut Vec<u8>, flags: u8, data_len: u16, rel: u32, blkno: u32) {
        body.extend_from_slice(&[0, flags]);
        body.extend_from_slice(&data_len.to_le_bytes());
        for v in [1663, 5, rel, blkno] {
            body.extend_from_slice(&u32::to_le_bytes(v));
        }
    }

    /// A HOT update of one row: block reference, changed column bytes,
    /// xl_heap_update. With `image`, the block reference carries a
    /// full-page image of the heap page.
    fn hot_update(&mut self, rel: u32, blkno: u32, image: bool) {
        let mut body = Vec::with_capacity(PAGE_SIZE + 64);
        let balance = (self.rng.below(10_001) as i32 - 5000).to_le_bytes();
        let mut data = vec![0x03, 0x80, 0x02, 0x29, 0x18, 0x0c, 0x00];
        data.extend_from_slice(&balance);
        let flags = 0x20 | if image { 0x10 } else { 0 };
        Self::block_ref(&mut body, flags, data.len() as u16, rel, blkno);
        if image {
            let page = self.heap_page(blkno);
            body.extend_from_slice(&(page.len() as u16).to_le_bytes());
            body.extend_from_slice(&[0x60, 0x01, 0x05]);
            body.extend_from_slice(&page);
        }
        body.extend_from_slice(&[0xFF, 14]);
        body.extend_from_slice(&data);
        let old_off = (1 + self.rng.below(ACCOUNTS_PER_PAGE)) as u16;
        body.extend_from_slice(&self.xid.to_le_bytes());
        body.extend_from_slice(&old_off.to_le_bytes());
        body.extend_from_slice(&[0, 0x20, 0, 0, 0, 0]);
        body.extend_from_slice(&(old_off + 61).to_le_bytes());
        self.record(10, 0x40, &body);
    }

    /// A pgbench_accounts page without its hole, as a full-page image holds
    /// it: page header, line pointers, then tuples (aid, bid, abalance,
    /// 84-space filler).
    fn heap_page(&mut self, blkno: u32) -> Vec<u8> {
        let mut page = Vec::with_capacity(PAGE_SIZE);
        page.extend_from_slice(&(0x1_0000_0000u64 + self.out.len() as u64).to_le_bytes());
        page.extend_from_slice(&[0, 0, 0, 0, 0x1C, 0x01, 0x58, 0x04, 0, 0x20, 0x04, 0x20]);
        page.extend_from_slice(&self.xid.to_le_bytes());
        for i in 0..ACCOUNTS_PER_PAGE as u32 {
            let off = PAGE_SIZE as u32 - 128 * (i + 1);
            page.extend_from_slice(&(off | 1 << 15 | 121 << 17).to_le_bytes());
        }
        let first_aid = blkno as u64 * ACCOUNTS_PER_PAGE + 1;
        for i in (0..ACCOUNTS_PER_PAGE).rev() {
            let xmin = if self.rng.chance(3) {
                self.xid - self.rng.below(50_000) as u32
            } else {
                2
            };
            page.extend_from_slice(&xmin.to_le_bytes());
            page.extend_from_slice(&[0; 8]);
            page.extend_from_slice(&(blkno as u16).to_le_bytes());
            page.extend_from_slice(&[0, 0]);
            page.extend_from_slice(&(i as u16 + 1).to_le_bytes());
            page.extend_from_slice(&[0x04, 0x00, 0x02, 0x09, 0x18, 0x00]);
            let aid = (first_aid + i) as u32;
            let bid = aid / 100_000 + 1;
            let balance = if xmin == 2 {
                0
            } else {
                self.rng.below(20_001) as i32 - 10_000
            };
            page.extend_from_slice(&aid.to_le_bytes());
            page.extend_from_slice(&bid.to_le_bytes());
            page.extend_from_slice(&balance.to_le_bytes());
            page.push(0xAB);
            page.extend_from_slice(&[b' '; 84]);
            page.extend_from_slice(&[0; 7]);
        }
        page
    }

    /// A full-page image of a page that is mostly zeros: a visibility-map
    /// or FSM page, which PostgreSQL logs whole because it has no hole.
    fn sparse_image(&mut self) {
        let mut body = Vec::with_capacity(PAGE_SIZE + 64);
        Self::block_ref(&mut body, 0x10, 0, REL_ACCOUNTS, 0);
        body.extend_from_slice(&(PAGE_SIZE as u16).to_le_bytes());
        body.extend_from_slice(&[0, 0, 0x01]);
        let mut page = vec![0u8; PAGE_SIZE];
        page[..8].copy_from_slice(&self.rng.next_u64().to_le_bytes());
        for b in page[24..24 + self.rng.below(600) as usize].iter_mut() {
            *b = 0xFF;
        }
        body.extend_from_slice(&page);
        self.record(0, 0xB0, &body);
    }

    /// An insert into pgbench_history: tid, bid, aid, delta, mtime.
    fn history_insert(&mut self, aid: u32) {
        let mut body = Vec::with_capacity(96);
        Self::block_ref(&mut body, 0x20, 29, REL_HISTORY, 11 + (aid >> 20));
        body.extend_from_slice(&[0xFF, 3, 59, 0, 0]);
        body.extend_from_slice(&[0x05, 0x00, 0x02, 0x08, 0x18]);
        let tid = 1 + self.rng.below(50) as u32;
        for v in [tid, tid / 10 + 1, aid, self.rng.below(10_001) as u32] {
            body.extend_from_slice(&v.to_le_bytes());
        }
        body.extend_from_slice(&self.time.to_le_bytes());
        self.record(10, 0x00, &body);
    }

    /// A commit record: its timestamp moves on by a few hundred µs.
    fn commit(&mut self) {
        self.time += 150 + self.rng.below(400);
        let mut body = vec![0xFF, 8];
        body.extend_from_slice(&self.time.to_le_bytes());
        self.record(1, 0x00, &body);
        self.xid += 1;
    }

    /// One pgbench TPC-B-like transaction; about one block reference in
    /// twelve carries a full-page image.
    fn transaction(&mut self) {
        let aid = 1 + self.rng.below(ACCOUNTS_PAGES * ACCOUNTS_PER_PAGE);
        let accounts_page = (aid - 1) / ACCOUNTS_PER_PAGE;
        let fpi = self.rng.chance(4);
        self.hot_update(REL_ACCOUNTS, accounts_page as u32, fpi);
        self.hot_update(REL_TELLERS, 0, false);
        self.hot_update(REL_BRANCHES, 0, false);
        self.history_insert(aid as u32);
        if self.rng.chance(150) {
            self.sparse_image();
        }
        self.commit();
    }
}

/// A deterministic stream of `len` WAL-like bytes.
pub(super) fn synthetic_wal(len: usize) -> Vec<u8> {
    let mut builder = WalBuilder {
        out: Vec::with_capacity(len + 2 * PAGE_SIZE),
        rng: Rng::new(0x5741_4C50_4C41_5952),
        xid: 750_000,
        prev: 0,
        time: 820_000_000_000_000,
    };
    while builder.out.len() < len {
        builder.transaction();
    }
    builder.out.truncate(len);
    builder.out
}
