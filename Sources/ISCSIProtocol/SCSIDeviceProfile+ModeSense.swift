import NIOCore

/// MODE SENSE (6) and (10) parameter data (SPC-4 §6.11-6.12, SBC-4 §6.5): the caching, control and
/// informational exceptions pages; the header's WP bit marks a read-only logical unit.
extension SCSIDeviceProfile {
    static let cachingPage: UInt8 = 0x08
    static let controlPage: UInt8 = 0x0A
    static let informationalExceptionsPage: UInt8 = 0x1C
    static let allPages: UInt8 = 0x3F

    /// The mode parameter data for one page (or all), with its header and a block descriptor.
    public func modeSense(
        sixByte: Bool, disableBlockDescriptors: Bool, pageControl: UInt8, page: UInt8, subpage: UInt8
    ) throws(SCSISense) -> ByteBuffer {
        // Page control 3 asks for saved values: nothing is saved (SPC-4 §6.11).
        if pageControl == 3 { throw .savingParametersNotSupported }
        let changeable = pageControl == 1
        var pages = ByteBuffer()
        let wanted: [UInt8]
        switch (page, subpage) {
        case (Self.allPages, 0x00), (Self.allPages, 0xFF):
            wanted = [Self.cachingPage, Self.controlPage, Self.informationalExceptionsPage]
        case (Self.cachingPage, 0), (Self.controlPage, 0), (Self.informationalExceptionsPage, 0):
            wanted = [page]
        default:
            throw .invalidFieldInCDB
        }
        for code in wanted { pages.writeBytes(modePage(code, changeable: changeable)) }

        let descriptor = disableBlockDescriptors ? ByteBuffer() : blockDescriptor
        // Device-specific parameter: WP (bit 7) and DPOFUA (bit 4: FUA is honoured).
        let deviceSpecific: UInt8 = (readOnly ? 0x80 : 0) | 0x10
        var buffer = ByteBuffer()
        if sixByte {
            buffer.writeInteger(UInt8(3 + descriptor.readableBytes + pages.readableBytes))
            buffer.writeInteger(UInt8(0))
            buffer.writeInteger(deviceSpecific)
            buffer.writeInteger(UInt8(descriptor.readableBytes))
        } else {
            buffer.writeInteger(UInt16(6 + descriptor.readableBytes + pages.readableBytes))
            buffer.writeInteger(UInt8(0))
            buffer.writeInteger(deviceSpecific)
            buffer.writeInteger(UInt16(0))
            buffer.writeInteger(UInt16(descriptor.readableBytes))
        }
        buffer.writeImmutableBuffer(descriptor)
        buffer.writeImmutableBuffer(pages)
        return buffer
    }

    /// The short block descriptor (SBC-4 §6.5.2): block count (capped) and block length.
    var blockDescriptor: ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeInteger(blockCount > 0xFFFF_FFFF ? UInt32.max : UInt32(blockCount))
        buffer.writeInteger(blockSize & 0x00FF_FFFF)  // Density code 0, then 24-bit block length.
        return buffer
    }

    func modePage(_ code: UInt8, changeable: Bool) -> [UInt8] {
        switch code {
        case Self.cachingPage:
            // WCE: writes are cached until SYNCHRONIZE CACHE or FUA (the engine's FLUSH contract).
            var page = [UInt8](repeating: 0, count: 20)
            page[0] = code
            page[1] = 18
            if !changeable { page[2] = 0x04 }
            return page
        case Self.controlPage:
            var page = [UInt8](repeating: 0, count: 12)
            page[0] = code
            page[1] = 10
            if !changeable {
                page[3] = 0x10  // Queue algorithm modifier 1: unrestricted reordering.
                page[8] = 0xFF  // Busy timeout period: unlimited.
                page[9] = 0xFF
            }
            return page
        default:
            var page = [UInt8](repeating: 0, count: 12)
            page[0] = code
            page[1] = 10
            return page
        }
    }
}
