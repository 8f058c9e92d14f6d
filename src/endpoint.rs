//! The Kusto REST endpoints kqlgate forwards (`docs/ARCHITECTURE.md`: the protocol's vocabulary,
//! shared by the stages and the upstream service).

/// A Kusto REST endpoint. The discriminant indexes per-endpoint tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    QueryV1 = 0,
    QueryV2 = 1,
    Mgmt = 2,
}

impl Endpoint {
    pub const ALL: [Endpoint; 3] = [Endpoint::QueryV1, Endpoint::QueryV2, Endpoint::Mgmt];

    pub fn path(self) -> &'static str {
        match self {
            Endpoint::QueryV1 => "/v1/rest/query",
            Endpoint::QueryV2 => "/v2/rest/query",
            Endpoint::Mgmt => "/v1/rest/mgmt",
        }
    }
}
