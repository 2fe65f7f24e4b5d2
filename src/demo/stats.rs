//! What the demo provider has done, in total and per hotel, for its console, `GET /stats`
//! and the tests.

use std::collections::BTreeMap;

use super::hotels::HOTELS;

/// The provider's counters. The totals are the fields `GET /stats` has always had; `hotels`
/// adds the same counts per hotel, for the events a hotel can be traced to (a rejected token
/// names no hotel).
#[derive(Clone, serde::Serialize)]
pub struct Stats {
    pub authorizations: u64,
    pub refreshes: u64,
    pub rejected_refreshes: u64,
    pub api_calls: u64,
    pub rejected_api_calls: u64,
    pub revocations: u64,
    pub hotels: BTreeMap<&'static str, HotelStats>,
}

/// One hotel's counters.
#[derive(Default, Clone, Copy, serde::Serialize)]
pub struct HotelStats {
    pub authorizations: u64,
    pub refreshes: u64,
    pub api_calls: u64,
    pub revocations: u64,
}

/// Something the provider did for a hotel's grant.
#[derive(Clone, Copy)]
pub enum Event {
    Authorization,
    Refresh,
    ApiCall,
    Revocation,
}

impl Default for Stats {
    /// Every hotel is listed from the start, at zero.
    fn default() -> Self {
        Self {
            authorizations: 0,
            refreshes: 0,
            rejected_refreshes: 0,
            api_calls: 0,
            rejected_api_calls: 0,
            revocations: 0,
            hotels: HOTELS
                .iter()
                .map(|h| (h.id, HotelStats::default()))
                .collect(),
        }
    }
}

impl Stats {
    /// Counts `event` in the totals and for `hotel`.
    pub fn count(&mut self, event: Event, hotel: &'static str) {
        let one = self.hotels.entry(hotel).or_default();
        let (total, per_hotel) = match event {
            Event::Authorization => (&mut self.authorizations, &mut one.authorizations),
            Event::Refresh => (&mut self.refreshes, &mut one.refreshes),
            Event::ApiCall => (&mut self.api_calls, &mut one.api_calls),
            Event::Revocation => (&mut self.revocations, &mut one.revocations),
        };
        *total += 1;
        *per_hotel += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_counts_in_the_total_and_for_its_hotel_only() {
        let mut stats = Stats::default();
        stats.count(Event::Refresh, "1002");
        stats.count(Event::Refresh, "1002");
        stats.count(Event::ApiCall, "1001");
        assert_eq!(stats.refreshes, 2);
        assert_eq!(stats.api_calls, 1);
        assert_eq!(stats.hotels["1002"].refreshes, 2);
        assert_eq!(stats.hotels["1001"].refreshes, 0);
        assert_eq!(stats.hotels["1001"].api_calls, 1);
        let json = serde_json::to_value(&stats).unwrap();
        assert_eq!(json["hotels"]["1002"]["refreshes"], 2);
        assert_eq!(json["rejected_api_calls"], 0);
    }
}
