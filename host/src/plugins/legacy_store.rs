//! `monoize:plugin/legacy-store`: maintenance of the legacy tables (DBT4) over the database.
//! Rows are answered as JSON objects without their credential columns; no router can reach
//! this interface (DBO4).

use crate::db::MAX_LIST_LIMIT;
use crate::db::legacy::{self, LegacyTable};

use super::registry_store::found;
use super::store::PluginState;
use super::wit::latest::legacy_store::{self as wit, Host};
use super::wit::latest::types::StoreError;

impl Host for PluginState {
    async fn list_rows(&mut self, table: wit::LegacyTable) -> Result<Vec<String>, StoreError> {
        let table = table_from_wit(table);
        let rows = self
            .dashboard_read(move |conn| legacy::list(conn, table, MAX_LIST_LIMIT))
            .await?;
        Ok(rows.iter().map(ToString::to_string).collect())
    }

    async fn delete_row(
        &mut self,
        table: wit::LegacyTable,
        id: String,
    ) -> Result<bool, StoreError> {
        let table = table_from_wit(table);
        let database = self.database()?;
        self.host_wait(database.write(move |tx| found(legacy::delete(tx, table, &id))))
            .await
            .map_err(super::billing_store::store_error)
    }
}

fn table_from_wit(table: wit::LegacyTable) -> LegacyTable {
    match table {
        wit::LegacyTable::Providers => LegacyTable::Providers,
        wit::LegacyTable::ModelMappings => LegacyTable::ModelMappings,
        wit::LegacyTable::GroupMembers => LegacyTable::GroupMembers,
    }
}
