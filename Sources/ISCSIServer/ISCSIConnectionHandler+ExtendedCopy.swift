import ISCSIProtocol
import Logging
import NIOCore

/// EXTENDED COPY (LID1) and RECEIVE COPY RESULTS (SPC-4 §6.4, §6.18): the copy manager is this target.
/// Copy targets are resolved by designator (this session's unit, or another unit of the same catalog the
/// initiator may use); each segment is handed to the destination unit's `copy`, so the data never passes
/// through the initiator.
extension ISCSIConnectionHandler {
    /// Largest EXTENDED COPY parameter list taken as data-out: a list within every limit of
    /// `SCSICopyLimits` is far smaller; a longer one is a PARAMETER LIST LENGTH ERROR before any data.
    static let maximumCopyParameterLength: UInt32 = 64 << 10

    /// Copy results kept for RECEIVE COPY RESULTS per session (one per list identifier, SPC-4 §6.18.1).
    static let heldCopyResults = 256

    func extendedCopy(_ data: ByteBuffer?, unit: any ISCSILogicalUnit, eventLoop: any EventLoop) throws(SCSISense)
        -> EventLoopFuture<SCSIOutcome>
    {
        guard let list = try SCSIExtendedCopyList.parse(data ?? ByteBuffer()) else {
            return eventLoop.makeSucceededFuture(.good(transferred: nil))
        }
        // Resolve every copy target first: one a segment names but cannot be reached aborts the copy
        // before anything is written.
        var units: [(any ISCSILogicalUnit)?] = []
        var peers: [any ISCSILogicalUnit] = []
        let own = Self.profile(of: unit)
        for target in list.targets {
            guard let identifier = target.naaIdentifier, target.codeSet == 1, target.blockSize == own.blockSize
            else {
                units.append(nil)
                continue
            }
            if identifier == unit.identifier & 0x0FFF_FFFF_FFFF_FFFF {
                units.append(unit)
            } else if let peer = catalog.copyUnit(identifier: identifier, initiator: initiator) {
                peers.append(peer)
                units.append(peer)
            } else {
                units.append(nil)
            }
        }
        let targets = catalog
        let owner = initiator
        let release: @Sendable () -> Void = { [peers] in
            for peer in peers { targets.detachCopyUnit(peer, initiator: owner) }
        }
        let listID = list.listID
        let holds = list.holdsResults
        var chain = eventLoop.makeSucceededFuture(SCSICopyStatus(succeeded: true, segmentsProcessed: 0, bytesCopied: 0))
        for segment in list.segments {
            let source = segment.source < units.count ? units[segment.source] : nil
            let destination = segment.destination < units.count ? units[segment.destination] : nil
            chain = chain.flatMap { status in
                Self.copySegment(segment, from: source, to: destination, eventLoop: eventLoop).map {
                    SCSICopyStatus(
                        succeeded: true, segmentsProcessed: status.segmentsProcessed + 1,
                        bytesCopied: status.bytesCopied + $0)
                }.flatMapErrorThrowing { error in
                    throw SegmentFailure(status: status, error: error)
                }
            }
        }
        return chain.hop(to: eventLoop).assumeIsolated().map { [self] status -> SCSIOutcome in
            release()
            if holds { hold(listID, status) }
            metrics?.copied(bytes: status.bytesCopied)
            return .good(transferred: nil)
        }.flatMapErrorThrowing { [self] error -> SCSIOutcome in
            release()
            guard let failure = error as? SegmentFailure else { throw error }
            if holds {
                var status = failure.status
                status.succeeded = false
                hold(listID, status)
            }
            if let sense = failure.error as? SCSISense { return .sense(sense) }
            if let error = failure.error as? ISCSILogicalUnitError {
                if error.code == .ioError { logger.error("EXTENDED COPY failed", metadata: ["error": "\(error.message)"]) }
                return .sense(error.code == .outOfRange ? .copyAborted : error.sense)
            }
            throw failure.error
        }.nonisolated()
    }

    /// One block-to-block segment: both targets reachable, both ranges inside their units, the
    /// destination writable; the byte count copied.
    static func copySegment(
        _ segment: SCSIExtendedCopyList.Segment, from source: (any ISCSILogicalUnit)?,
        to destination: (any ISCSILogicalUnit)?, eventLoop: any EventLoop
    ) -> EventLoopFuture<UInt64> {
        guard let source, let destination else {
            return eventLoop.makeFailedFuture(SCSISense.copyTargetNotReachable)
        }
        let block = UInt64(profile(of: destination).blockSize)
        let blocks = UInt64(segment.blocks)
        let (sourceEnd, sourceOverflow) = segment.sourceLBA.addingReportingOverflow(blocks)
        let (destinationEnd, destinationOverflow) = segment.destinationLBA.addingReportingOverflow(blocks)
        guard !sourceOverflow, !destinationOverflow, sourceEnd <= source.size / block,
            destinationEnd <= destination.size / block
        else {
            return eventLoop.makeFailedFuture(SCSISense.copyAborted)
        }
        if destination.readOnly { return eventLoop.makeFailedFuture(SCSISense.writeProtected) }
        guard blocks > 0 else { return eventLoop.makeSucceededFuture(0) }
        return destination.copy(
            from: source, sourceOffset: segment.sourceLBA * block, offset: segment.destinationLBA * block,
            length: blocks * block, eventLoop: eventLoop
        ).map { blocks * block }
    }

    func hold(_ listID: UInt8, _ status: SCSICopyStatus) {
        if copyResults[listID] == nil && copyResults.count >= Self.heldCopyResults { copyResults.removeAll() }
        copyResults[listID] = status
    }

    /// RECEIVE COPY RESULTS: COPY STATUS of a copy this session made with a list identifier whose results
    /// are held (any other is INVALID FIELD IN CDB), or the OPERATING PARAMETERS.
    func receiveCopyResults(action: UInt8, listID: UInt8) throws(SCSISense) -> ByteBuffer {
        if action == SCSIReceiveCopyResults.operatingParameters { return SCSIReceiveCopyResults.operatingParametersData }
        guard let status = copyResults[listID] else { throw .invalidFieldInCDB }
        return status.parameterData
    }
}

/// A segment failed after `status` (the segments before it) was done.
struct SegmentFailure: Error {
    var status: SCSICopyStatus
    var error: any Error
}
