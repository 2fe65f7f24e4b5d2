//! The hotels the demo provider hosts, and what its API answers about each: a token is for
//! one hotel, and `/api/hotel` and `/api/reservations` answer that hotel's data.

use serde_json::{Value, json};

/// One of the provider's hotels.
pub struct Hotel {
    /// The id the token response names (`hotel_id`) and an app routes by.
    pub id: &'static str,
    pub name: &'static str,
    pub city: &'static str,
    guests: [(&'static str, &'static str, u32); 2],
}

/// Every hotel, in the order the approval page offers them; the first is the default.
pub const HOTELS: [Hotel; 2] = [
    Hotel {
        id: "1001",
        name: "Hotel Demo Lisbon",
        city: "Lisbon",
        guests: [("R-1", "Ada Lovelace", 2), ("R-2", "Alan Turing", 1)],
    },
    Hotel {
        id: "1002",
        name: "Hotel Demo Porto",
        city: "Porto",
        guests: [("R-7", "Grace Hopper", 3), ("R-8", "Edsger Dijkstra", 2)],
    },
];

/// The hotel with this id.
pub fn find(id: &str) -> Option<&'static Hotel> {
    HOTELS.iter().find(|h| h.id == id)
}

impl Hotel {
    /// What the API answers at `path` (`/api/...`) to a token for this hotel.
    pub fn answer(&self, path: &str) -> Value {
        match path.trim_end_matches('/') {
            "/api/hotel" => json!({
                "id": self.id.parse::<u64>().unwrap_or_default(),
                "name": self.name,
                "city": self.city,
            }),
            "/api/reservations" => json!({
                "hotel_id": self.id,
                "reservations": self.guests.iter().map(|(id, guest, nights)| {
                    json!({"id": id, "guest": guest, "nights": nights})
                }).collect::<Vec<_>>(),
            }),
            _ => json!({
                "path": path,
                "message": "the demo API has /api/hotel and /api/reservations",
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_hotel_answers_its_own_data() {
        let lisbon = find("1001").unwrap().answer("/api/hotel");
        assert_eq!(lisbon["name"], "Hotel Demo Lisbon");
        assert_eq!(lisbon["id"], 1001);
        let porto = find("1002").unwrap().answer("/api/reservations/");
        assert_eq!(porto["hotel_id"], "1002");
        assert_eq!(porto["reservations"][0]["guest"], "Grace Hopper");
        assert!(find("1003").is_none());
    }
}
