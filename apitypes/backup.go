package apitypes

// Online backups (docs/api.md, "Backups"): POST /api/v1/backup answers
// with the backup file itself (docs/operations.md describes its format).
const (
	// BackupContentType is the media type of a backup file.
	BackupContentType = "application/vnd.strata.backup"
	// BackupLastSeqHeader carries the change log's last sequence number
	// in the backup (also in the file's own header).
	BackupLastSeqHeader = "X-Strata-Backup-Last-Seq"
)
